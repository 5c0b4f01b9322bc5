# Helpers for the test_echem_* modules (no tests here): a deterministic Gaussian noise
# source and synthetic cell signals sampled as ADS131M04 codes. MicroPython's random
# differs between ports, so the tests carry their own generator.
import math
from array import array

# ADS131M04 at gain 1: +-1.2 V full scale over 2**23 codes.
V_LSB = 1.2 / 8388608
# Current channel through a 10 ohm shunt: amps per code.
I_LSB = V_LSB / 10.0


class Gauss:
    """xorshift32 + Box-Muller: reproducible N(0, 1) on every port."""

    def __init__(self, seed=12345):
        self.state = seed & 0xFFFFFFFF or 1
        self.spare = None

    def _u(self):
        x = self.state
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.state = x
        return (x + 0.5) / 4294967296.0

    def __call__(self):
        if self.spare is not None:
            v = self.spare
            self.spare = None
            return v
        r = math.sqrt(-2.0 * math.log(self._u()))
        a = 2.0 * math.pi * self._u()
        self.spare = r * math.sin(a)
        return r * math.cos(a)


def rc_series(r, c, f):
    w = 2 * math.pi * f
    return complex(r, -1.0 / (w * c))


def r_par_c(r, c, f):
    w = 2 * math.pi * f
    return 1.0 / complex(1.0 / r, w * c)


def randles(rs, rct, cdl, sigma_w, f):
    w = 2 * math.pi * f
    zw = sigma_w / math.sqrt(w) * complex(1.0, -1.0)
    zf = rct + zw
    return rs + 1.0 / (1.0 / zf + complex(0.0, w * cdl))


def blocks(z_of_f, tones, n, fs, i_amp_a, i_dc_a=0.0, v_dc_v=0.0, v_drift_v=0.0,
           i_drift_a=0.0, v_noise_v=0.0, i_noise_a=0.0, seed=1, as_codes=True, into=None):
    """V and I blocks for current tones [(f_hz, phase_rad)] through impedance z_of_f(f):
    i = i_dc + drift + sum i_amp cos(wt + ph), v = v_dc + drift + sum Re(Z i_amp e^..).
    Written straight into array('i') codes (or array('f') volts/amps): a 4096-sample
    list of boxed floats would not fit the test heap. ``into``: (v, i) arrays to reuse
    (a fresh 16 KB pair per call fragments the 256 KB heap)."""
    g = Gauss(seed)
    spec = []
    for f, ph in tones:
        z = z_of_f(f)
        spec.append((2 * math.pi * f / fs, ph, abs(z), math.atan2(z.imag, z.real)))
    if into is not None:
        vb, ib = into
    elif as_codes:
        vb = array("i", bytes(4 * n))
        ib = array("i", bytes(4 * n))
    else:
        vb = array("f", bytes(4 * n))
        ib = array("f", bytes(4 * n))
    for t in range(n):
        x = t / (n - 1)
        v = v_dc_v + v_drift_v * x
        c = i_dc_a + i_drift_a * x
        for w, ph, zm, zp in spec:
            c += i_amp_a * math.cos(w * t + ph)
            v += i_amp_a * zm * math.cos(w * t + ph + zp)
        if v_noise_v:
            v += v_noise_v * g()
        if i_noise_a:
            c += i_noise_a * g()
        if isinstance(vb[0], int):
            vb[t] = round(v / V_LSB)
            ib[t] = round(c / I_LSB)
        else:
            vb[t] = v
            ib[t] = c
    return vb, ib


def phase_deg(z):
    return math.degrees(math.atan2(z.imag, z.real))


def buffers(n=4096):
    """A reusable pair of code blocks."""
    return array("i", bytes(4 * n)), array("i", bytes(4 * n))
