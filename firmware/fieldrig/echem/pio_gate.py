# ruff: noqa: F403, F405
"""PIO program that gates the galvanostat's enable switch with exact pulse timing.

Only the program body lives here: ``rp2.asm_pio`` assembles a function by running it with
its module's globals swapped for the PIO assembler's names (pull, mov, set, jmp, ...), so
this module holds nothing else that could be disturbed while that happens. ``pulses``
assembles it lazily on the board; the firmware tests run the same body through a
cycle-accurate emulator to check the timing arithmetic.

Protocol (three TX FIFO words per train, each 32-bit):

    word 0: pulse count - 1            -> X   (pulses left)
    word 1: on cycles  - ON_OVERHEAD   -> ISR (kept for every pulse)
    word 2: off cycles - OFF_OVERHEAD  -> OSR (kept for every pulse)

then ``count`` pulses: enable high for exactly ``on`` state-machine cycles, low for
``off``; after the last one the pin stays low and the program blocks on the next pull.

Cycle accounting (every instruction below takes one cycle, none has delay bits):

    high = set(1) + mov(y, isr) + (y_on + 1) * jmp            -> y_on + 3
    low  = set(0) + mov(y, osr) + (y_off + 1) * jmp + jmp(x)  -> y_off + 4
"""

TYPE_CHECKING = False
if TYPE_CHECKING:
    from rp2.asm_pio import *

ON_OVERHEAD = 3
OFF_OVERHEAD = 4


def gate_program():
    pull(block)
    mov(x, osr)
    pull(block)
    mov(isr, osr)
    pull(block)
    label("pulse")
    set(pins, 1)
    mov(y, isr)
    label("on")
    jmp(y_dec, "on")
    set(pins, 0)
    mov(y, osr)
    label("off")
    jmp(y_dec, "off")
    jmp(x_dec, "pulse")
    # Train finished: raise this state machine's IRQ flag 0 (no wait) so the platform
    # can tell "done" from "running" without polling the pin.
    irq(rel(0))
