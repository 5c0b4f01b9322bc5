"""Minimal test runner for firmware tests under the MicroPython unix port.

MicroPython has no pytest, so each firmware test module is plain MicroPython: top-level
functions named ``test_*`` that use ``assert``. This runner imports one module and runs
one test (or lists them) and reports in a line-oriented form the CPython side
(``fieldrig_hil.mptest``) turns into pytest items:

    micropython mpunit.py list  test_link.py         -> one test name per line
    micropython mpunit.py run   test_link.py NAME    -> "MPUNIT PASS" or a traceback + "MPUNIT FAIL"

Run one module by hand with ``micropython mpunit.py all test_link.py``.
"""

import sys


def _load(path):
    # Import the test module by file name from its own directory.
    slash = path.rfind("/")
    folder = path[:slash] if slash >= 0 else "."
    name = path[slash + 1 :]
    if name.endswith(".py"):
        name = name[:-3]
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return __import__(name)


def _names(mod):
    return sorted(n for n in dir(mod) if n.startswith("test_") and callable(getattr(mod, n)))


def _run_one(mod, name):
    try:
        getattr(mod, name)()
    except Exception as exc:  # report every failure the same way, incl. AssertionError
        sys.print_exception(exc)
        print("MPUNIT FAIL", name)
        return False
    print("MPUNIT PASS", name)
    return True


def main(argv):
    if len(argv) < 3:
        print("usage: mpunit.py list|run|all MODULE.py [TEST]")
        sys.exit(2)
    cmd, path = argv[1], argv[2]
    mod = _load(path)
    if cmd == "list":
        for n in _names(mod):
            print(n)
    elif cmd == "run":
        sys.exit(0 if _run_one(mod, argv[3]) else 1)
    elif cmd == "all":
        passed = failed = 0
        for n in _names(mod):
            if _run_one(mod, n):
                passed += 1
            else:
                failed += 1
        print("%d passed, %d failed" % (passed, failed))
        sys.exit(0 if failed == 0 else 1)
    else:
        print("unknown command", cmd)
        sys.exit(2)


main(sys.argv)
