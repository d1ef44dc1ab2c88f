"""Ready-made networks built through the Python API (used by the tests and benchmarks)."""

from . import models as m
from .network import FixedProbability, Network


def cuba_network(n: int = 4000, batch_size: int = 1, precision: str = "float", seed: int = 42,
                 p: float | None = None, name: str = "cuba") -> Network:
    """Vogels & Abbott CUBA as in Brian2's example; ``p`` defaults to 80 synapses/neuron.

    ``n`` neurons, 80 % excitatory (``exc``) and 20 % inhibitory (``inh``), all recording
    their spikes.

    Examples:
        >>> from spikeforge import cuba_network
        >>> net = cuba_network(n=400, batch_size=2)
        >>> {name: pop.size for name, pop in net.populations.items()}
        {'exc': 320, 'inh': 80}
    """
    p = 80.0 / n if p is None else p
    net = Network(name, dt=0.1, batch_size=batch_size, seed=seed, precision=precision)
    lif = dict(tau_m=20.0, v_rest=-49.0, v_reset=-60.0, v_th=-50.0, t_ref=5.0)
    n_exc = n * 4 // 5
    for pop, size in (("exc", n_exc), ("inh", n - n_exc)):
        net.add_population(pop, size, m.LIF, params=lif, init={"v": {"uniform": [-60.0, -50.0]}},
                           record_spikes=True)
    for pre, w, tau in (("exc", 1.62, 5.0), ("inh", -9.0, 10.0)):
        for post in ("exc", "inh"):
            net.add_projection(f"{pre}_{post}", pre, post, m.STATIC_CONSTANT, m.EXP_CURR, FixedProbability(p),
                               wu_params={"w": w}, ps_params={"tau_syn": tau})
    return net
