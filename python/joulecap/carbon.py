"""Carbon (gCO2e) and cost next to kWh, from a grid intensity and a price that the user sets; nothing is fetched.

    from joulecap import carbon_settings
    c = carbon_settings(grid_gco2_per_kwh=380, price_per_kwh=0.32, currency="EUR")
    c.of(7.2e6)            # {'energy_kwh': 2.0, 'gco2e': 760.0, 'cost': 0.64}

Each value comes from, in this order: the argument, the environment (``JOULECAP_GRID_GCO2_PER_KWH``,
``JOULECAP_PRICE_PER_KWH``, ``JOULECAP_CURRENCY``), a config file (the ``config`` argument or
``JOULECAP_CARBON_CONFIG``: ``key = value`` lines with the keys ``grid_gco2_per_kwh``, ``price_per_kwh``,
``currency``; ``#`` comments).  Unset values stay unset: no default intensity, no default price.  Bad input (not a
number, NaN, infinite, negative, an unknown config key) raises ``InvalidArgument`` saying what was wrong and where.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional

from .errors import InvalidArgument
from ._common import J_PER_KWH

__all__ = ["Carbon", "carbon_settings", "ENV_GRID", "ENV_PRICE", "ENV_CURRENCY", "ENV_CONFIG"]

ENV_GRID = "JOULECAP_GRID_GCO2_PER_KWH"
ENV_PRICE = "JOULECAP_PRICE_PER_KWH"
ENV_CURRENCY = "JOULECAP_CURRENCY"
ENV_CONFIG = "JOULECAP_CARBON_CONFIG"

# The most carbon-intensive grids (lignite) emit about 1.1-1.3 kg per kWh.  Above this the number is in another
# unit (g per MWh, say), not a dirtier grid.
_MAX_GCO2_PER_KWH = 3000.0
_KEYS = ("grid_gco2_per_kwh", "price_per_kwh", "currency")
_CURRENCY = re.compile(r"[^\s,;\"'=#\x00-\x1f\x7f]{1,8}")  # whole string: fullmatch


@dataclass(frozen=True)
class Carbon:
    """A grid intensity (gCO2e per kWh) and a price per kWh (in ``currency``), either of them possibly unset.

    ``gco2e(energy_j)`` and ``cost(energy_j)`` turn joules into grams of CO2e and money (None where unset);
    ``of(energy_j)`` gives the dict of what is set; ``origin`` says where each value came from.
    """

    grid_gco2_per_kwh: Optional[float] = None
    price_per_kwh: Optional[float] = None
    currency: str = ""
    origin: Dict[str, str] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        where = self.origin.get
        object.__setattr__(self, "grid_gco2_per_kwh", _intensity(self.grid_gco2_per_kwh, where("grid_gco2_per_kwh", "argument")))
        object.__setattr__(self, "price_per_kwh", _price(self.price_per_kwh, where("price_per_kwh", "argument")))
        object.__setattr__(self, "currency", _currency(self.currency, where("currency", "argument")))

    @property
    def is_set(self) -> bool:
        """True when an intensity or a price is set."""
        return self.grid_gco2_per_kwh is not None or self.price_per_kwh is not None

    def gco2e(self, energy_j: float) -> Optional[float]:
        """Grams of CO2e for energy_j joules; None when no intensity is set (NaN for an unknown energy)."""
        if self.grid_gco2_per_kwh is None:
            return None
        return energy_j / J_PER_KWH * self.grid_gco2_per_kwh

    def cost(self, energy_j: float) -> Optional[float]:
        """The price of energy_j joules in ``currency``; None when no price is set."""
        if self.price_per_kwh is None:
            return None
        return energy_j / J_PER_KWH * self.price_per_kwh

    def of(self, energy_j: float) -> Dict[str, float]:
        """``{"energy_kwh": ..., "gco2e": ..., "cost": ...}``, with the keys of what is set (kWh always)."""
        out = {"energy_kwh": energy_j / J_PER_KWH}
        g, c = self.gco2e(energy_j), self.cost(energy_j)
        if g is not None:
            out["gco2e"] = g
        if c is not None:
            out["cost"] = c
        return out

    def describe(self, energy_j: Optional[float] = None) -> str:
        """One line: the settings, or with energy_j the amounts (``2 kWh, 760 gCO2e (380 g/kWh), 0.64 EUR``)."""
        cur = self.currency or "(currency unset)"
        if energy_j is None:
            parts = []
            if self.grid_gco2_per_kwh is not None:
                parts.append("%g gCO2e/kWh (%s)" % (self.grid_gco2_per_kwh, self.origin.get("grid_gco2_per_kwh", "argument")))
            if self.price_per_kwh is not None:
                parts.append("%g %s/kWh (%s)" % (self.price_per_kwh, cur, self.origin.get("price_per_kwh", "argument")))
            return ", ".join(parts) or "no grid intensity or price set"
        parts = ["%.4g kWh" % (energy_j / J_PER_KWH)]
        if self.grid_gco2_per_kwh is not None:
            parts.append("%.4g gCO2e (at %g g/kWh)" % (self.gco2e(energy_j), self.grid_gco2_per_kwh))
        if self.price_per_kwh is not None:
            parts.append("%.4g %s (at %g/kWh)" % (self.cost(energy_j), cur, self.price_per_kwh))
        return ", ".join(parts)


def carbon_settings(
    grid_gco2_per_kwh: Any = None,
    price_per_kwh: Any = None,
    currency: Optional[str] = None,
    *,
    config: Any = None,
    environ: Optional[Mapping[str, str]] = None,
) -> Carbon:
    """The grid intensity, price and currency in force: each from its argument, else the environment
    (``JOULECAP_GRID_GCO2_PER_KWH``, ``JOULECAP_PRICE_PER_KWH``, ``JOULECAP_CURRENCY``), else the config file
    (``config``, a path or a dict; default ``JOULECAP_CARBON_CONFIG``), else unset.  Raises ``InvalidArgument``
    for a value that is not a finite number >= 0 (or an implausible intensity), naming where it came from."""
    env = os.environ if environ is None else environ
    values: Dict[str, Any] = {}
    origin: Dict[str, str] = {}
    for key, arg, var in zip(_KEYS, (grid_gco2_per_kwh, price_per_kwh, currency), (ENV_GRID, ENV_PRICE, ENV_CURRENCY)):
        if arg is not None:
            values[key], origin[key] = arg, "argument %s" % key
        elif env.get(var, "").strip():
            values[key], origin[key] = env[var].strip(), "environment variable %s" % var
    if config is None and env.get(ENV_CONFIG, "").strip():
        config = env[ENV_CONFIG].strip()
        config_origin = "config file %s (from %s)" % (config, ENV_CONFIG)
    else:
        config_origin = "config file %s" % (config,) if not isinstance(config, Mapping) else "config"
    if config is not None:
        for key, value in _read_config(config).items():
            if key not in values:
                values[key], origin[key] = value, config_origin
    return Carbon(values.get("grid_gco2_per_kwh"), values.get("price_per_kwh"), values.get("currency") or "", origin)


def resolve(carbon: Any) -> Carbon:
    """What the tools' and callbacks' ``carbon`` argument means: None the settings in force (environment, config
    file), a :class:`Carbon` itself, a dict of :func:`carbon_settings`'s arguments, or False for none."""
    if carbon is None:
        return carbon_settings()
    if carbon is False:
        return Carbon()
    if isinstance(carbon, Carbon):
        return carbon
    if isinstance(carbon, Mapping):
        unknown = sorted(set(carbon) - set(_KEYS) - {"config"})
        if unknown:
            raise InvalidArgument("carbon=%r: unknown key(s) %s; the keys are %s" % (carbon, ", ".join(unknown), ", ".join(_KEYS)))
        return carbon_settings(**carbon)
    raise InvalidArgument(
        "carbon=%r: pass joulecap.carbon_settings(grid_gco2_per_kwh=..., price_per_kwh=..., currency=...), a dict of "
        "those, None (the environment's JOULECAP_GRID_GCO2_PER_KWH / JOULECAP_PRICE_PER_KWH) or False" % (carbon,)
    )


# --------------------------------------------------------------------------------------------------------------
# Checking


def _number(value: Any, what: str, where: str, example: str) -> float:
    if isinstance(value, bool):
        raise InvalidArgument("%s=%r (%s) is not a number: give e.g. %s" % (what, value, where, example))
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InvalidArgument("%s=%r (%s) is not a number: give e.g. %s" % (what, value, where, example)) from None
    if not math.isfinite(v):
        raise InvalidArgument("%s=%r (%s) is not finite: give a number such as %s" % (what, value, where, example))
    if v < 0:
        raise InvalidArgument("%s=%r (%s) is negative: give a number >= 0 such as %s" % (what, value, where, example))
    return v


def _intensity(value: Any, where: str) -> Optional[float]:
    if value is None:
        return None
    v = _number(value, "grid_gco2_per_kwh", where, "380 (grams of CO2e per kWh of your grid)")
    if v > _MAX_GCO2_PER_KWH:
        raise InvalidArgument(
            "grid_gco2_per_kwh=%r (%s) is above %g g/kWh, more than any grid emits: give grams of CO2e per kWh "
            "(0.38 kg/kWh is 380)" % (value, where, _MAX_GCO2_PER_KWH)
        )
    return v


def _price(value: Any, where: str) -> Optional[float]:
    if value is None:
        return None
    return _number(value, "price_per_kwh", where, "0.32 (your price of one kWh)")


def _currency(value: Any, where: str) -> str:
    if value is None or value == "":
        return ""
    if not isinstance(value, str) or not _CURRENCY.fullmatch(value):
        raise InvalidArgument(
            "currency=%r (%s): give a short code such as EUR, USD or $ (1-8 characters, no spaces, commas, quotes "
            "or control characters)" % (value, where)
        )
    return value


def _read_config(config: Any) -> Dict[str, str]:
    if isinstance(config, Mapping):
        items = dict(config)
        where = "config"
    else:
        try:
            path = os.fspath(config)
        except TypeError:
            raise InvalidArgument("config=%r: pass the path of a carbon config file, or a dict" % (config,)) from None
        where = "config file %s" % path
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read(65536)
        except OSError as e:
            raise InvalidArgument("%s cannot be read: %s; fix the path (or unset %s)" % (where, e.strerror, ENV_CONFIG)) from None
        items = {}
        for n, line in enumerate(text.splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            key, eq, value = line.partition("=")
            if not eq or not key.strip():
                raise InvalidArgument("%s:%d: %r is not 'key = value' (keys: %s)" % (path, n, line, ", ".join(_KEYS)))
            items[key.strip()] = value.strip()
    unknown = sorted(set(items) - set(_KEYS))
    if unknown:
        raise InvalidArgument("%s: unknown key(s) %s; the keys are %s" % (where, ", ".join(unknown), ", ".join(_KEYS)))
    return {k: v for k, v in items.items() if v is not None and v != ""}
