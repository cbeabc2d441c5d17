MARK = 'imported'
