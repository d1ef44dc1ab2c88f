"""Projections in a network file: their synapse models, connectivity and delays.

Part of the network schema (:mod:`spikeforge.frontend.network`), on the public reader
(:class:`spikeforge.frontend.reader.Reader`).
"""

from __future__ import annotations

import re

from ..delays import is_per_synapse
from ..errors import ModelError, SpikeforgeError
from ..models import builtins as _builtins
from ..network import Network, make_connectivity
from .lines import LineDict, plain, show, type_name
from .reader import VALUE_KEYS, Reader

__all__ = ["ProjectionReader", "PROJECTION_KEYS", "WEIGHT_UPDATE_KEYS", "POSTSYNAPTIC_KEYS"]

PROJECTION_KEYS = ("pre", "post", "connectivity", "weight_update", "postsynaptic", "delay", "max_delay")
WEIGHT_UPDATE_KEYS = ("model", "params", "init", *VALUE_KEYS)
POSTSYNAPTIC_KEYS = ("model", "params", "init", "target", *VALUE_KEYS)


class ProjectionReader(Reader):
    """Reads the ``projections:`` of a network file."""

    def synapse_part(self, node, key, kind, allowed, where):
        """A projection's weight_update / postsynaptic entry: a model name or a mapping."""
        value = node[key]
        line = self.vline(node, key)
        if isinstance(value, str):
            sub = LineDict(model=value)
            sub.line = line
            sub.key_lines["model"] = sub.value_lines["model"] = line
        else:
            sub = self.check_mapping(value, f"{where}.{key}", line, "a model name or a mapping with model")
        self.check_keys(sub, allowed, f"{where}.{key}", required=("model",))
        mline = self.vline(sub, "model")
        if kind == "postsynaptic" and sub["model"] == "delta" and "delta" not in self.user_models:
            target = self.get_str(sub, "target", f"{where}.{key}", default="v", identifier=True)
            with self.building(self.vline(sub, "target") if "target" in sub else mline):
                model = _builtins.delta_curr(target)
        else:
            if "target" in sub:
                self.fail(
                    f"{where}.{key}.target: only the built-in 'delta' model takes a target",
                    self.kline(sub, "target"),
                )
            model = self.resolve_model(sub["model"], kind, f"{where}.{key}.model", mline)
        params = self.get_mapping(sub, "params", f"{where}.{key}")
        init = self.get_mapping(sub, "init", f"{where}.{key}")
        return sub, model, plain(params), plain(init)

    def synapse_units(self, where, wu_node, wu, ps_node, ps, post_model):
        """The params and init of a projection's weight_update and postsynaptic parts with
        values with units converted: a weight takes the unit of the postsynaptic input, which
        the postsynaptic model may take from the target neuron (``exp_curr``: its ``i_syn``)."""
        out = []
        for part, part_node, model, links in (
            ("weight_update", wu_node, wu, {"postsynaptic": ps, "target": post_model}),
            ("postsynaptic", ps_node, ps, {"target": post_model}),
        ):
            for key in ("params", "init"):
                mapping = self.get_mapping(part_node, key, f"{where}.{part}")
                out.append(plain(self.with_units(mapping, f"{where}.{part}.{key}", model, **links)))
        return out

    def connectivity(self, node, where):
        """The ``connectivity`` of a projection (default dense), checked, with each error at the
        line of its key."""
        if "connectivity" not in node or node["connectivity"] is None:
            return "dense"
        value = node["connectivity"]
        line = self.vline(node, "connectivity")
        allowed = (
            "dense, one_to_one, {fixed_probability: p}, {fixed_probability: {p: .., allow_autapses: .., "
            "procedural: ..}}, "
            "{from_list: {pre: [...], post: [...]}}, {condition: .., probability: .., params: {..}}, "
            "{fixed_in_degree: k}, {fixed_out_degree: k}, {fixed_total: n}"
        )
        if isinstance(value, str):
            if value not in ("dense", "all_to_all", "one_to_one"):
                self.fail(f"{where}.connectivity: unknown connectivity {value!r} (allowed: {allowed})", line)
            return value
        if isinstance(value, LineDict) and set(value) & {"condition", "probability"}:
            return self.expression_connectivity(value, where)
        if not isinstance(value, LineDict) or len(value) != 1:
            self.fail(f"{where}.connectivity: expected one of {allowed}, got {show(value)}", line)
        ((kind, arg),) = value.items()
        aline = self.vline(value, kind)
        if kind == "fixed_probability":
            spec, aline = self.fixed_probability(arg, where, aline)
        elif kind == "from_list":
            spec = self.from_list(arg, where, aline)
        elif kind in ("fixed_in_degree", "fixed_out_degree", "fixed_total"):
            spec, aline = self.fixed_number(kind, arg, where, aline)
        else:
            self.fail(
                f"{where}.connectivity: unknown connectivity '{kind}' (allowed: {allowed})",
                self.kline(value, kind),
            )
        try:
            return make_connectivity(spec)
        except SpikeforgeError as err:
            self.fail(f"{where}.connectivity: {err}", aline)

    def fixed_probability(self, arg, where: str, line: int) -> tuple[dict, int]:
        """``{fixed_probability: p}`` or ``{fixed_probability: {p: .., allow_autapses: ..,
        procedural: ..}}`` (``arg``: its value, at ``line``): the connectivity spec and the line
        later errors about it point at."""
        if isinstance(arg, LineDict):
            self.check_keys(
                arg, ("p", "allow_autapses", "procedural"), f"{where}.connectivity.fixed_probability",
                required=("p",)
            )
            p = self.get_number(arg, "p", f"{where}.connectivity.fixed_probability")
            aa = arg.get("allow_autapses", True)
            if not isinstance(aa, bool):
                self.fail(
                    f"{where}.connectivity.fixed_probability.allow_autapses: expected true or false, "
                    f"got {show(aa)}",
                    self.vline(arg, "allow_autapses"),
                )
            procedural = arg.get("procedural", False)
            if not isinstance(procedural, bool):
                self.fail(f"{where}.connectivity.fixed_probability.procedural: expected true or false, got "
                          f"{show(procedural)}", self.vline(arg, "procedural"))
            return {"fixed_probability": {"p": p, "allow_autapses": aa, "procedural": procedural}}, \
                self.vline(arg, "p")
        if isinstance(arg, bool) or not isinstance(arg, (int, float)):
            self.fail(
                f"{where}.connectivity.fixed_probability: expected a probability in [0, 1], "
                f"got {type_name(arg)} {show(arg)}",
                line,
            )
        return {"fixed_probability": arg}, line

    def from_list(self, arg, where: str, line: int) -> dict:
        """``{from_list: {pre: [...], post: [...]}}`` (``arg``: its value): the connectivity spec."""
        arg = self.check_mapping(
            arg, f"{where}.connectivity.from_list", line, "a mapping with pre and post lists"
        )
        self.check_keys(arg, ("pre", "post"), f"{where}.connectivity.from_list", required=("pre", "post"))
        for side in ("pre", "post"):
            ids = arg[side]
            if not isinstance(ids, list) or any(
                isinstance(i, bool) or not isinstance(i, int) for i in ids
            ):
                self.fail(
                    f"{where}.connectivity.from_list.{side}: expected a list of neuron ids (integers)",
                    self.vline(arg, side),
                )
        return {"from_list": {"pre": list(arg["pre"]), "post": list(arg["post"])}}

    def fixed_number(self, kind: str, arg, where: str, line: int) -> tuple[dict, int]:
        """``{fixed_in_degree: k}``, ``{fixed_out_degree: k}`` or ``{fixed_total: n}``, each also as
        ``{k: .., allow_autapses: ..}``: the connectivity spec and the line of the count."""
        count = "n" if kind == "fixed_total" else "k"
        if isinstance(arg, LineDict):
            self.check_keys(arg, (count, "allow_autapses"), f"{where}.connectivity.{kind}", required=(count,))
            line = self.vline(arg, count)
            spec = {kind: {count: arg[count], "allow_autapses": arg.get("allow_autapses", True)}}
            if not isinstance(spec[kind]["allow_autapses"], bool):
                self.fail(f"{where}.connectivity.{kind}.allow_autapses: expected true or false, got "
                          f"{show(spec[kind]['allow_autapses'])}", self.vline(arg, "allow_autapses"))
            number = arg[count]
        else:
            spec, number = {kind: arg}, arg
        if isinstance(number, bool) or not isinstance(number, int) or number < 0:
            self.fail(f"{where}.connectivity.{kind}: expected a whole number of synapses, got "
                      f"{type_name(number)} {show(number)}", line)
        return spec, line

    def expression_connectivity(self, value, where):
        """``{condition: .., probability: .., params: {..}, allow_autapses: ..}``; each error
        at the line of its key."""
        from ..connectivity import FromExpressions

        where = f"{where}.connectivity"
        self.check_keys(value, ("condition", "probability", "params", "allow_autapses"), where)
        for key in ("condition", "probability"):
            text = value.get(key)
            if key in value and (isinstance(text, bool) or not isinstance(text, (str, int, float))):
                self.fail(f"{where}.{key}: expected an expression, got {type_name(text)} {show(text)}",
                          self.vline(value, key))
        params = {}
        if "params" in value:
            node = self.check_mapping(value["params"], f"{where}.params", self.vline(value, "params"))
            params = {k: self.get_number(node, k, f"{where}.params") for k in node}
        autapses = value.get("allow_autapses", True)
        if not isinstance(autapses, bool):
            self.fail(f"{where}.allow_autapses: expected true or false, got {show(autapses)}",
                      self.vline(value, "allow_autapses"))
        try:
            return FromExpressions(value.get("condition"), value.get("probability"), params, autapses)
        except SpikeforgeError as err:
            match = re.match(r"connectivity\.(\w+)", str(err))
            key = match.group(1) if match and match.group(1) in value else None
            self.fail(f"{where.rsplit('.connectivity', 1)[0]}.{err}", self.vline(value, key) if key
                      else self.vline(value, next(iter(value))))

    def load_projections(self, top, net: Network):
        """Add the ``projections:`` of ``top`` to ``net``."""
        projs = self.get_mapping(top, "projections", "")
        for name, node in projs.items():
            self.load_projection(projs, name, node, net)

    def load_projection(self, projs: LineDict, name: str, node, net: Network):
        """Add the projection ``name`` of the ``projections:`` mapping ``projs`` to ``net``."""
        where = f"projections.{name}"
        line = self.kline(projs, name)
        node = self.check_mapping(
            node,
            where,
            self.vline(projs, name),
            "a mapping with pre, post, weight_update and postsynaptic",
        )
        self.check_keys(
            node, PROJECTION_KEYS, where, required=("pre", "post", "weight_update", "postsynaptic")
        )
        for side in ("pre", "post"):
            pop = self.get_str(node, side, where)
            if pop not in net.populations:
                self.fail(
                    f"{where}.{side}: unknown population '{pop}' "
                    f"(populations: {', '.join(net.populations)})",
                    self.vline(node, side),
                )
        conn = self.connectivity(node, where)
        wu_node, wu, wu_params, wu_init = self.synapse_part(
            node, "weight_update", "weight_update", WEIGHT_UPDATE_KEYS, where
        )
        ps_node, ps, ps_params, ps_init = self.synapse_part(
            node, "postsynaptic", "postsynaptic", POSTSYNAPTIC_KEYS, where
        )
        wu_params, wu_init, ps_params, ps_init = self.synapse_units(
            where, wu_node, wu, ps_node, ps, net.populations[node["post"]].model
        )
        delay = self.projection_delay(node, wu, where)

        def locate(err):
            return self.projection_error_line(err, node, wu_node, ps_node, wu, ps)

        with self.building(line, locate):
            net.add_projection(
                name,
                node["pre"],
                node["post"],
                wu,
                ps,
                conn,
                wu_params=wu_params,
                wu_init=wu_init,
                ps_params=ps_params,
                ps_init=ps_init,
                delay=delay if not isinstance(delay, (int, float)) else float(delay),
                max_delay=self.delay_limit(node, where),
                **{f"wu_{k}": v for k, v in self.value_options(wu_node, f"{where}.weight_update").items()},
                **{f"ps_{k}": v for k, v in self.value_options(ps_node, f"{where}.postsynaptic").items()},
            )

    def projection_delay(self, node: LineDict, wu, where: str):
        """The ``delay`` of a projection (default 0): a number of ms, one per named pathway of
        ``wu`` (a dict), or values per synapse (spikeforge.delays)."""
        delay = self.unit_value(node, "delay", where, "ms") if "delay" in node else 0.0
        if self.is_pathway_delays(delay, wu):
            delay = self.pathway_delays(delay, wu, f"{where}.delay", self.kline(node, "delay"))
        elif is_per_synapse(delay):  # one delay per synapse, in ms (spikeforge.delays)
            delay = plain(delay)
        elif delay is None or isinstance(delay, bool) or not isinstance(delay, (int, float)):
            self.fail(
                f"{where}.delay: expected a number of ms, got {type_name(delay)} {show(delay)}",
                self.vline(node, "delay"),
            )
        return delay

    def projection_error_line(self, err, node: LineDict, wu_node: LineDict, ps_node: LineDict, wu, ps):
        """The line of an error raised while the network adds the projection ``node`` (with the
        weight-update part ``wu_node`` of model ``wu`` and the postsynaptic part ``ps_node`` of
        model ``ps``); None: the projection's own line."""
        msg = str(err)
        if isinstance(err, ModelError):
            return self.synapse_model_error_line(err, wu_node, ps_node, wu, ps)
        if "dynamic: the delay cannot be dynamic" in msg and isinstance(wu_node, LineDict) \
                and "dynamic" in wu_node:
            return self.vline(wu_node, "dynamic")
        if re.search(r"weight-update variable", msg):
            return self.line_in(wu_node, ["init"], msg) or wu_node.line
        path = re.search(r"\bdelay\.(\w+)", msg)  # the delay of a named pathway: the line of its entry
        if path and isinstance(node.get("delay"), LineDict) and path.group(1) in node["delay"]:
            return self.vline(node["delay"], path.group(1))
        field = re.search(r"connectivity\.(\w+)", msg)  # drawn connectivity: the line of its key
        conn_node = node.get("connectivity")
        if field and isinstance(conn_node, LineDict):
            for sub in [conn_node] + [v for v in conn_node.values() if isinstance(v, LineDict)]:
                if field.group(1) in sub:
                    return self.vline(sub, field.group(1))
        return self.hint_line(
            msg,
            node,
            [
                (r"^[^:]*: max_delay", "max_delay"),
                (r"\bdelay\b", "delay"),
                (r"one_to_one|probability|from_list|connectivity", "connectivity"),
                (r"postsynaptic", "postsynaptic"),
                (r"presynaptic|, pre\b", "pre"),
                (r", post\b", "post"),
            ],
        )

    def synapse_model_error_line(self, err: ModelError, wu_node: LineDict, ps_node: LineDict, wu, ps):
        """The line of a model's error about a projection's synapse: the value the projection
        gives (params, init, target), else the field of a model defined in ``models:``."""
        msg = str(err)
        for part, part_node in ((ps, ps_node), (wu, wu_node)):
            if err.model == part.name and (err.field or "").split(".")[0] in ("params", "derived"):
                return self.use_line(part_node, err) or part_node.line
        if err.model == ps.name:
            in_def = self.user_model_line(ps.name, err.field, msg)
            if in_def is not None and (err.field or "").split(".")[0] not in ("params", "init"):
                return in_def
            return self.line_in(ps_node, (err.field or "").split("."), msg) or (
                self.vline(ps_node, "target") if "target" in ps_node else ps_node.line
            )
        if err.model == wu.name:
            in_def = self.user_model_line(wu.name, err.field, msg)  # v_pre, v_post, summed
            if in_def is not None and (err.field or "").split(".")[0] in ("on_pre", "on_post",
                                                                           "equations", "summed"):
                return in_def
            return self.line_in(wu_node, (err.field or "").split("."), msg) or wu_node.line
        return None

    def delay_limit(self, node, where: str):
        """``max_delay`` (ms) of a projection: the largest per-synapse delay its buffer holds."""
        if node.get("max_delay") is None:
            return None
        value = self.unit_value(node, "max_delay", where, "ms")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(f"{where}.max_delay: expected a number of ms, got {type_name(value)} {show(value)}",
                      self.vline(node, "max_delay"))
        return float(value)

    @staticmethod
    def is_pathway_delays(delay, wu) -> bool:
        """Whether a projection's ``delay`` maps the named pathways of ``wu`` to their delays
        (``{up: 1 ms, down: 3 ms}``) rather than giving values per synapse (``{uniform: ...}``)."""
        if not isinstance(delay, LineDict) or not wu.pathways:
            return False
        return set(delay) <= set(wu.pathways) or not set(delay) & {"values", "counts", "uniform", "normal",
                                                                     "expression"}

    def pathway_delays(self, delay: LineDict, wu, where: str, line: int) -> dict:
        """One delay in ms per named pathway (each checked here, with the line of its entry)."""
        for path, value in delay.items():
            if path not in wu.pathways:
                self.fail(f"{where}.{path}: '{path}' is not a pathway of '{wu.name}' (pathways: "
                          f"{', '.join(wu.pathways)})", self.kline(delay, path))
            if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
                self.fail(f"{where}.{path}: expected a number of ms, got {type_name(value)} {show(value)}",
                          self.vline(delay, path))
        missing = [p for p in wu.pathways if p not in delay]
        if missing:
            self.fail(f"{where}: pathway '{missing[0]}' of '{wu.name}' has no delay; give every pathway one "
                      f"(e.g. '{missing[0]}: 0 ms')", line)
        return {p: float(delay[p]) for p in wu.pathways}

