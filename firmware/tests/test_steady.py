# Steady state: boot the rig and run its loops for 100k scheduler passes in virtual
# time. The heap must be flat after warm-up (no leak, bounded garbage per pass), and
# the firmware as deployed (.mpy) must boot and run inside a 128 KiB heap.
import gc
import os
import sys

import steady_main

FIRMWARE_MODULES = ("fieldrig/__init__", "fieldrig/clock", "fieldrig/sched", "fieldrig/link",
                    "fieldrig/safety", "fieldrig/config", "fieldrig/pid", "fieldrig/pressure",
                    "fieldrig/galvanostat", "fieldrig/session", "fieldrig/commands",
                    "fieldrig/app", "boards/__init__", "boards/unix_synthetic")


def test_heap_is_flat_over_100k_passes():
    assert steady_main.main(100000)


def test_garbage_per_pass_is_bounded():
    rig, edge = steady_main.boot()
    rig.set_temperature(60.0)
    rig.set_pressure(5.0)
    rig.set_current(0.5)
    steady_main.run(rig, edge, 2000)
    gc.collect()
    gc.disable()
    try:
        a0 = gc.mem_alloc()
        steady_main.run(rig, edge, 200)
        per_pass = (gc.mem_alloc() - a0) / 200
    finally:
        gc.enable()
    print("garbage per pass: %.0f bytes" % per_pass)
    # Floats are boxed on this port (and on the rp2), and the plant models here compute
    # in floats too: garbage per pass is expected, but bounded (measured ~450 bytes:
    # a collection every ~150 passes, i.e. about every second; docs/firmware.md).
    assert per_pass < 800, per_pass


def _sh(cmd):
    rc = os.system(cmd)
    assert rc == 0, "failed (%d): %s" % (rc, cmd)


def test_deployed_firmware_runs_in_a_128k_heap():
    # Compile as for the board (mpy-cross, as tools/mpy_compile.py does), then run the
    # steady state in a fresh interpreter with -X heapsize=128K.
    out = "/tmp/fieldrig-mpy-%s" % "".join("%02x" % b for b in os.urandom(6))
    _sh("mkdir -p %s/fieldrig %s/boards" % (out, out))
    try:
        for mod in FIRMWARE_MODULES + ("steady_main",):
            src = ("tests/" if mod == "steady_main" else "") + mod + ".py"
            _sh("mpy-cross -march=armv7emsp -o %s/%s.mpy -s %s ../%s" % (out, mod, src, src))
        log = out + "/run.log"
        _sh("cd %s && MICROPYPATH=%s %s -X heapsize=128K -c "
            "'import steady_main; steady_main.main(100000)' > %s 2>&1"
            % (out, out, getattr(sys, "executable"), log))
        with open(log) as f:
            text = f.read()
        print(text)
        assert "STEADY OK" in text, text
    finally:
        os.system("rm -rf " + out)
