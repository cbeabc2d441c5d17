import cProfile, pstats, io
_p = None
def start():
    global _p
    _p = cProfile.Profile()
    _p.enable()
def stop():
    _p.disable()
    s = io.StringIO()
    pstats.Stats(_p, stream=s).sort_stats("tottime").print_stats(25)
    return s.getvalue()
