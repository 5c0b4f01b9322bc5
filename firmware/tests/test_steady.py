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


# Loaded on first use by a recipe with a block ADC (docs/firmware.md, "Resource budget").
ECHEM_MODULES = ("fieldrig/echem/__init__", "fieldrig/echem/pio_gate", "fieldrig/echem/pulses",
                 "fieldrig/echem/mitigation", "fieldrig/echem/recipe", "fieldrig/echem/_dft_py",
                 "fieldrig/echem/_dft_viper", "fieldrig/echem/impedance",
                 "fieldrig/echem/detect", "fieldrig/echem/synthetic_cell",
                 "fieldrig/echem_host", "fieldrig/recipe_store", "fieldrig/program",
                 "fieldrig/measure")


def _deployed_steady(modules, heap, call, expect="STEADY OK"):
    # Compile as for the board (mpy-cross, as tools/mpy_compile.py does), then run the
    # steady state in a fresh interpreter with the given heap. (The viper kernels are
    # ARM code: on this port impedance falls back to the bit-identical plain ones.)
    out = "/tmp/fieldrig-mpy-%s" % "".join("%02x" % b for b in os.urandom(6))
    _sh("mkdir -p %s/fieldrig/echem %s/boards" % (out, out))
    try:
        for mod in modules + ("steady_main",):
            src = ("tests/" if mod in ("steady_main", "test_steady") else "") + mod + ".py"
            _sh("mpy-cross -march=armv7emsp -o %s/%s.mpy -s %s ../%s" % (out, mod, src, src))
        log = out + "/run.log"
        _sh("cd %s && MICROPYPATH=%s %s -X heapsize=%s -c "
            "'import %s; %s' > %s 2>&1"
            % (out, out, getattr(sys, "executable"), heap, call.split(".")[0], call, log))
        with open(log) as f:
            text = f.read()
        print(text)
        assert expect in text, text
    finally:
        os.system("rm -rf " + out)


def test_deployed_firmware_runs_in_a_128k_heap():
    _deployed_steady(FIRMWARE_MODULES, "128K", "steady_main.main(100000)")


# A week of symmetric cycling: the recipe runner, its cursor saves, and (the cell answers
# block reads) operando impedance tracking with the detector every 30 s.
CYCLING = ('{"recipe": 1, "name": "steady-cycling", "area_cm2": 1.0, "steps": [{"type": '
           '"loop", "count": 100000, "steps": [{"type": "plate", "current_ma_cm2": 0.5, '
           '"until": {"time_s": 20}}, {"type": "rest", "until": {"time_s": 5}}, {"type": '
           '"strip", "current_ma_cm2": 0.5, "until": {"time_s": 20}}]}]}')


def _start_cycling(rig, edge):
    from fieldrig.echem_host import recipe_host

    host = recipe_host(rig)
    host.load(CYCLING)
    host.start()
    gc.collect()
    print("echem_loaded_alloc", gc.mem_alloc())
    # Two whole cycles and a few tracking blocks before the heap counts as warm: the
    # first step changes, events and blocks size their buffers and dicts.
    steady_main.run(rig, edge, 20000)


def echem_steady(passes):
    """The electrochemistry steady state (run as deployed by the test below)."""
    from fieldrig.echem.synthetic_cell import RcCell
    from fieldrig.echem_host import impedance_host, recipe_host

    cell = RcCell(resistance_ohm=50.0, r_int_ohm=100.0, c_dl_f=10e-6)
    holder = []

    def setup(rig, edge):
        holder.append(rig)
        _start_cycling(rig, edge)

    ok = steady_main.main(passes, cell, setup)
    rig = holder[0]
    host = recipe_host(rig)
    imp = impedance_host(rig)
    print("recipe", host.status())
    print("impedance", imp.status())
    ok = ok and host.running() and imp.observations >= passes // 6000
    ok = ok and imp.rejected_blocks == 0 and not rig.safety.tripped
    print("ECHEM STEADY OK" if ok else "ECHEM STEADY FAIL")


def test_deployed_firmware_with_recipe_and_impedance_is_flat_in_336k():
    _deployed_steady(FIRMWARE_MODULES + ECHEM_MODULES + ("test_steady",), "336K",
                     "test_steady.echem_steady(50000)", "ECHEM STEADY OK")
