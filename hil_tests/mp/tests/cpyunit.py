"""Run one chip test module's test under CPython with mpunit's output protocol
("MPUNIT PASS" / traceback + "MPUNIT FAIL"); see fieldrig_hil.mptest."""

import importlib.util
import sys
import traceback


def main(argv):
    if len(argv) != 4 or argv[1] != "run":
        print("usage: cpyunit.py run MODULE.py TEST")
        return 2
    path, name = argv[2], argv[3]
    spec = importlib.util.spec_from_file_location(path.rsplit("/", 1)[-1][:-3], path)
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
        getattr(mod, name)()
    except Exception:
        traceback.print_exc()
        print("MPUNIT FAIL", name)
        return 1
    print("MPUNIT PASS", name)
    return 0


sys.exit(main(sys.argv))
