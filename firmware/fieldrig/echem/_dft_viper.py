# ruff: noqa: F821  (ptr16/ptr32 are viper built-ins, unknown to a linter)
"""Integer single-bin DFT kernels compiled by the viper emitter (MicroPython only).

Bit-identical to ``_dft_py`` (see its docstring for the fixed-point contract). Viper
ints are machine words: 32-bit on the RP2350, 64-bit on the unix port. The contract
keeps every value below 2**30, so both behave the same; ``sx`` (word bits - 32)
sign-extends the zero-extended ptr32 loads of array('i') samples. The Q15 table is an
array('h'); ptr16 loads are zero-extended too and are sign-extended with the xor trick.
Nothing here allocates: results go to a preallocated array('i').
"""

import micropython


@micropython.viper
def span(buf, n: int, sx: int, out):
    p = ptr32(buf)
    o = ptr32(out)
    lo = (p[0] << sx) >> sx
    hi = lo
    t = 1
    while t < n:
        x = (p[t] << sx) >> sx
        if x < lo:
            lo = x
        elif x > hi:
            hi = x
        t += 1
    o[0] = lo
    o[1] = hi


@micropython.viper
def moments(buf, n: int, x0: int, s: int, sx: int, out):
    p = ptr32(buf)
    o = ptr32(out)
    m0 = 0
    h = 0
    lo = 0
    t = 0
    while t < n:
        q = (((p[t] << sx) >> sx) - x0) >> s
        m0 += q
        lo += t * q
        h += lo >> 16
        lo &= 0xFFFF
        t += 1
    o[0] = m0
    o[1] = h
    o[2] = lo


@micropython.viper
def bin_sums(buf, n: int, x0: int, s: int, sx: int, table, k: int, out):
    p = ptr32(buf)
    c = ptr16(table)
    o = ptr32(out)
    ic = 0
    isn = (3 * n) >> 2
    ch = 0
    cl = 0
    sh = 0
    sl = 0
    t = 0
    while t < n:
        q = (((p[t] << sx) >> sx) - x0) >> s
        cl += q * ((c[ic] ^ 0x8000) - 0x8000)
        ch += cl >> 16
        cl &= 0xFFFF
        sl += q * ((c[isn] ^ 0x8000) - 0x8000)
        sh += sl >> 16
        sl &= 0xFFFF
        ic += k
        if ic >= n:
            ic -= n
        isn += k
        if isn >= n:
            isn -= n
        t += 1
    o[0] = ch
    o[1] = cl
    o[2] = sh
    o[3] = sl
