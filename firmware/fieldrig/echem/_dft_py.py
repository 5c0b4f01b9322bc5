"""Integer single-bin DFT kernels, plain bytecode version (also runs under CPython).

Same arithmetic, same arguments, same results bit for bit as ``_dft_viper``; used when
the viper emitter is missing (CPython cross-checks) and as the "plain" benchmark row.

Fixed-point contract (shared with the viper kernels):

- samples are raw ADC codes (|x| < 2**24); each is taken as q = (x - x0) >> s with x0
  the block's mid-range and s chosen so that |q| <= 16383 (15 bits);
- the reference is a Q15 cosine table of the block length n (|c| <= 32767);
- a product is < 2**29, so an accumulator is kept as hi * 65536 + lo with lo in
  [0, 65536): every intermediate stays below 2**30, i.e. a 31-bit MicroPython small
  int on the board (no allocation) and a plain machine word in viper.

``sx`` is the sign-extension shift the viper kernels need (ptr32 loads are zero-extended
on 64-bit ports); the plain kernels read signed values and ignore it.
"""


def span(buf, n, sx, out):
    """out[0] = min, out[1] = max of buf[0:n]."""
    lo = buf[0]
    hi = lo
    for t in range(1, n):
        x = buf[t]
        if x < lo:
            lo = x
        elif x > hi:
            hi = x
    out[0] = lo
    out[1] = hi


def moments(buf, n, x0, s, sx, out):
    """out[0] = sum q; out[1], out[2] = hi, lo of sum t*q."""
    m0 = 0
    h = 0
    lo = 0
    for t in range(n):
        q = (buf[t] - x0) >> s
        m0 += q
        lo += t * q
        h += lo >> 16
        lo &= 0xFFFF
    out[0] = m0
    out[1] = h
    out[2] = lo


def bin_sums(buf, n, x0, s, sx, table, k, out):
    """out[0], out[1] = hi, lo of sum q*cos(2 pi k t/n)*32767; out[2], out[3] the same
    for sin. ``table`` holds cos(2 pi i/n)*32767 for i < n (n a multiple of 4)."""
    ic = 0
    isn = (3 * n) >> 2  # sin(a) = cos(a - pi/2): index shifted by 3n/4 (mod n)
    ch = 0
    cl = 0
    sh = 0
    sl = 0
    for t in range(n):
        q = (buf[t] - x0) >> s
        cl += q * table[ic]
        ch += cl >> 16
        cl &= 0xFFFF
        sl += q * table[isn]
        sh += sl >> 16
        sl &= 0xFFFF
        ic += k
        if ic >= n:
            ic -= n
        isn += k
        if isn >= n:
            isn -= n
    out[0] = ch
    out[1] = cl
    out[2] = sh
    out[3] = sl
