"""Reads memcheck logs (scripts/valgrind-check) and fails on what concerns us:
any invalid read or write (anywhere: one in CPython can be our misuse of its API),
and any definite leak allocated by our code: interloop's frames (Rust sources,
the extension module) reached from the allocation without passing through
CPython's interpreter (evaluating Python code, importing, creating an interpreter).
Every allocation a worker makes has our thread entry at the bottom of its stack;
those made while the worker runs Python code are CPython's to free, counted and
not failed on. So are str objects: CPython 3.13 never frees interned strings (they
are immortal), and it interns module attribute names and identifiers, including
the names our module initialisation creates; a str we leaked ourselves would hide
among them (the limit of this check)."""
import pathlib
import re
import sys


def blocks(text):
    """memcheck's error and leak records: paragraphs of '==pid== ' lines."""
    cur = []
    for line in text.splitlines():
        body = re.sub(r"^==\d+== ?", "", line)
        if not body.strip():
            if cur:
                yield cur
            cur = []
        else:
            cur.append(body)
    if cur:
        yield cur


OURS = re.compile(r"_interloop|interloop::|\(src/[\w/]+\.rs:\d+\)|\((?:core|worker|module|ffi|mod|state|fill|view|handle|sources|timers|stream|datagram|pipe)\.rs:\d+\)")
CPYTHON_RUNS_CODE = re.compile(
    r"_PyEval_EvalFrameDefault|PyEval_EvalCode|import_find_and_load|PyImport_Import"
    r"|Py_NewInterpreterFromConfig|Py_EndInterpreter|Py_Finalize|_PyImport_"
    # pyo3 gives a class's slot tables to its type object, which lives as long as
    # the process: by design, not a leak.
    r"|create_type_object")


def allocated_by_us(frames):
    if any("PyUnicode_New" in line for line in frames[:3]):
        return False
    for line in frames:
        if CPYTHON_RUNS_CODE.search(line):
            return False
        if OURS.search(line):
            return True
    return False


def main(logdir):
    invalid, ours, theirs, summaries = [], [], 0, []
    logs = sorted(pathlib.Path(logdir).glob("*.log"))
    if not logs:
        print("valgrind: no log written")
        return 1
    for log in logs:
        for b in blocks(log.read_text(errors="replace")):
            head = b[0]
            if head.startswith(("Invalid read", "Invalid write", "Invalid free")):
                invalid.append(b)
            elif "definitely lost" in head:
                if allocated_by_us(b[1:]):
                    ours.append(b)
                else:
                    theirs += 1
            elif head.startswith("ERROR SUMMARY") or head.startswith("LEAK SUMMARY"):
                summaries.append(f"{log.name}: " + " / ".join(b))
    for b in invalid + ours:
        print("\n".join(b))
        print()
    print(f"valgrind: {len(logs)} process(es); {len(invalid)} invalid access(es); "
          f"{len(ours)} definite leak(s) allocated by interloop; {theirs} other definite "
          "leak record(s) (allocated while CPython ran code, not counted)")
    return 1 if invalid or ours else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
