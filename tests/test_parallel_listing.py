"""The senders' lists of the time-parallel kernels: per instance and step, the indices of the
nonzero values in order (the inputs' listed by the first layer's input kernel, a hidden
layer's by its forward scan), the same whether the AVX-512 compress path or the portable
one-at-a-time path (``SPIKEFORGE_PORTABLE=1``: no -march=native) lists them, and so the same
gradients, bit for bit."""

import numpy as np
import pytest

from spikeforge.models.builtins import LEAKY_READOUT, ONE_STEP_CURR, STATIC, VALUE_INPUT
from spikeforge.models.neuron import NeuronModel
from spikeforge.network import Network
from spikeforge.training.parallel import ParallelCompiler

# sizes that are not multiples of 16 or 8: the compressed blocks and the tail both list
T, B, N_IN, N_H, K = 23, 3, 21, 37, 2


def _compiled(precision, w_in, w_out):
    lif = NeuronModel("lif_nr", params={"tau_m": 10.0, "v_th": 0.3}, vars={"v": 0.0},
                      equations="dv/dt = (10.0 * i_syn - v) / tau_m", threshold="v > v_th")
    net = Network("listing", dt=1.0, batch_size=B, precision=precision)
    net.add_population("inp", N_IN, VALUE_INPUT)
    net.add_population("h", N_H, lif)
    net.add_population("out", K, LEAKY_READOUT, {"tau_m": 20.0, "bias": [0.0] * K})
    net.add_projection("inp_h", "inp", "h", STATIC, ONE_STEP_CURR, wu_init={"w": w_in.ravel()})
    net.add_projection("h_out", "h", "out", STATIC, ONE_STEP_CURR, wu_init={"w": w_out.ravel()})
    return ParallelCompiler(loss="xent").compile(net, inputs="inp", hidden=["h"], readout="out", n_steps=T)


def _lists(c, pop, n, steps):
    """Per instance, the list of each step (``steps`` of them) read from the kernels' arrays."""
    senders = c.backend.pull(f"par_{pop}_senders").reshape(B, T * n)
    ends = c.backend.pull(f"par_{pop}_n_senders").reshape(B, T)
    return [[senders[b, (ends[b, t - 1] if t else 0):ends[b, t]].tolist() for t in range(steps)] for b in range(B)]


def _run(precision, x, weights, labels, mask):
    c = _compiled(precision, *weights)
    try:
        out = c.gradients(x, mask, labels=labels, values=True)
        z = out["forward"]["h"]["z"]
        return (_lists(c, "inp", N_IN, T - 1), _lists(c, "h", N_H, T), z,
                {k: np.array(v) for k, v in out["grads"].items()})
    finally:
        c.close()


@pytest.mark.parametrize("precision", ["float", "double"])
def test_senders_are_the_nonzero_values_in_order_on_both_code_paths(precision, monkeypatch):
    rng = np.random.default_rng(3)
    x = (rng.random((T, B, N_IN)) < 0.3) * rng.uniform(0.2, 1.5, (T, B, N_IN))
    x[rng.random((T, B, N_IN)) < 0.1] = -0.0  # a negative zero sends nothing
    x[:, 0, :16] = 1.0  # a whole compressed block of senders, and one with none
    x[:, 1, :] = 0.0
    weights = (rng.uniform(-0.1, 0.5, (N_IN, N_H)), rng.normal(0.0, 1.0, (N_H, K)))
    labels, mask = np.array([0, 1, 1]), (np.arange(T) >= T // 2).astype(float)

    inp_lists, h_lists, z, grads = _run(precision, x, weights, labels, mask)
    # the inputs of step t reach step t+1: steps 0..T-2 are listed
    assert inp_lists == [[np.flatnonzero(x[t, b]).tolist() for t in range(T - 1)] for b in range(B)]
    assert h_lists == [[np.flatnonzero(z[t, b]).tolist() for t in range(T)] for b in range(B)]
    assert 0 < sum(map(len, sum(h_lists, []))) < T * B * N_H  # some neurons spike, not all

    monkeypatch.setenv("SPIKEFORGE_PORTABLE", "1")  # the one-at-a-time path
    inp_p, h_p, z_p, grads_p = _run(precision, x, weights, labels, mask)
    assert (inp_p, h_p) == (inp_lists, h_lists) and np.array_equal(z_p, z)
    for name, g in grads.items():
        assert np.array_equal(grads_p[name], g), name
