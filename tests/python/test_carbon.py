"""joulecap.carbon: grid intensity and price from an argument, the environment or a config file; hostile input."""

import math

import pytest

import joulecap
from joulecap.carbon import Carbon, carbon_settings, resolve
from joulecap.errors import InvalidArgument

J_PER_KWH = 3.6e6


def test_unset_by_default_and_nothing_invented():
    c = carbon_settings(environ={})
    assert not c.is_set and c.gco2e(1e6) is None and c.cost(1e6) is None
    assert c.of(7.2e6) == {"energy_kwh": 2.0}


def test_argument_environment_config_in_that_order(tmp_path):
    conf = tmp_path / "carbon.conf"
    conf.write_text("# my grid\ngrid_gco2_per_kwh = 100\nprice_per_kwh = 0.5  # night tariff\ncurrency = GBP\n")
    env = {"JOULECAP_GRID_GCO2_PER_KWH": "200", "JOULECAP_CARBON_CONFIG": str(conf)}
    c = carbon_settings(environ=env)
    assert (c.grid_gco2_per_kwh, c.price_per_kwh, c.currency) == (200, 0.5, "GBP")
    assert c.origin["grid_gco2_per_kwh"] == "environment variable JOULECAP_GRID_GCO2_PER_KWH"
    assert "config file" in c.origin["price_per_kwh"]
    c = carbon_settings(grid_gco2_per_kwh=300, environ=env)
    assert c.grid_gco2_per_kwh == 300 and c.origin["grid_gco2_per_kwh"] == "argument grid_gco2_per_kwh"
    assert c.of(7.2e6) == {"energy_kwh": 2.0, "gco2e": 600.0, "cost": 1.0}
    assert "600 gCO2e (at 300 g/kWh)" in c.describe(7.2e6) and "1 GBP" in c.describe(7.2e6)
    assert carbon_settings(config={"price_per_kwh": 0.25}, environ={}).cost(3.6e6) == 0.25


@pytest.mark.parametrize("value, words", [
    ("nan", "not finite"), ("inf", "not finite"), ("-3", "negative"), ("lots", "not a number"), ("", None),
    ("400g", "not a number"), ("380000", "above 3000"), (True, "not a number")])
def test_hostile_intensities_are_refused_with_where_and_what_to_do(value, words):
    if words is None:  # an empty variable is an unset one
        assert carbon_settings(environ={"JOULECAP_GRID_GCO2_PER_KWH": value}).grid_gco2_per_kwh is None
        return
    with pytest.raises(InvalidArgument, match=words) as e:
        if isinstance(value, str):
            carbon_settings(environ={"JOULECAP_GRID_GCO2_PER_KWH": value})
        else:
            carbon_settings(grid_gco2_per_kwh=value, environ={})
    assert "grid_gco2_per_kwh" in str(e.value) and ("e.g." in str(e.value) or "such as" in str(e.value)
                                                     or "give" in str(e.value))


def test_bad_prices_currencies_and_config_files(tmp_path):
    with pytest.raises(InvalidArgument, match="JOULECAP_PRICE_PER_KWH.*negative"):
        carbon_settings(environ={"JOULECAP_PRICE_PER_KWH": "-0.1"})
    for cur in ("EUR,USD", "a b", "x" * 9, "E\nUR", '"'):
        with pytest.raises(InvalidArgument, match="currency"):
            carbon_settings(currency=cur, environ={})
    assert carbon_settings(currency="€", price_per_kwh=1, environ={}).currency == "€"
    conf = tmp_path / "c.conf"
    conf.write_text("grid = 300\n")
    with pytest.raises(InvalidArgument, match="unknown key.*grid.*grid_gco2_per_kwh"):
        carbon_settings(config=conf, environ={})
    conf.write_text("grid_gco2_per_kwh 300\n")
    with pytest.raises(InvalidArgument, match=r"c.conf:1: .* is not 'key = value'"):
        carbon_settings(config=conf, environ={})
    with pytest.raises(InvalidArgument, match="cannot be read"):
        carbon_settings(environ={"JOULECAP_CARBON_CONFIG": str(tmp_path / "missing.conf")})
    with pytest.raises(InvalidArgument, match="unknown key"):
        resolve({"intensity": 3})
    with pytest.raises(InvalidArgument, match="carbon_settings"):
        resolve("400")
    assert not resolve(False).is_set and resolve(Carbon(10)).grid_gco2_per_kwh == 10


def test_measurements_carry_gco2e_and_cost(fake, monkeypatch):
    monkeypatch.setenv("JOULECAP_GRID_GCO2_PER_KWH", "400")
    monkeypatch.setenv("JOULECAP_PRICE_PER_KWH", "0.3")
    monkeypatch.setenv("JOULECAP_CURRENCY", "EUR")
    with joulecap.EnergyMeasurementTool(None, 0) as tool:
        tool.start()
        m = tool.stop()
        assert m.gco2e == pytest.approx(m.total_energy_j / J_PER_KWH * 400, rel=1e-12)
        assert m.cost == pytest.approx(m.total_energy_j / J_PER_KWH * 0.3, rel=1e-12)
        d = m.as_dict()
        assert d["gco2e"] == m.gco2e and d["cost"] == m.cost and d["currency"] == "EUR"
    with joulecap.EnergyMeasurementTool(None, 0, carbon=False) as tool:
        tool.start()
        m = tool.stop()
        assert m.gco2e is None and m.cost is None and "gco2e" not in m.as_dict()
    monkeypatch.setenv("JOULECAP_GRID_GCO2_PER_KWH", "-1")
    with pytest.raises(InvalidArgument, match="negative"):
        joulecap.EnergyMeasurementTool(None, 0)  # before any measurement


# --------------------------------------------------------------------------------------------------------------
# joulecap plot shows them when set


def _texts(fig):
    out = [fig._suptitle.get_text()] if fig._suptitle else []
    for ax in fig.axes:
        out += [t.get_text() for t in ax.texts]
    return out


def test_plots_show_gco2e_and_cost_when_set_and_only_then(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from pathlib import Path

    from joulecap import plots

    fix = Path(__file__).resolve().parent / "fixtures"
    sn = plots.read(fix / "snippets.csv")
    totals, _ = plots._run_totals(sn, "snippets")
    total_j = sum(v for v in totals.values() if math.isfinite(v))
    for k in ("JOULECAP_GRID_GCO2_PER_KWH", "JOULECAP_PRICE_PER_KWH", "JOULECAP_CURRENCY", "JOULECAP_CARBON_CONFIG"):
        monkeypatch.delenv(k, raising=False)
    assert not any("gCO2e" in t for t in _texts(joulecap.plot(fix / "snippets.csv")))
    fig = joulecap.plot(fix / "snippets.csv", carbon={"grid_gco2_per_kwh": 500, "price_per_kwh": 0.2, "currency": "USD"})
    title = fig._suptitle.get_text()
    assert ("%.4g gCO2e (at 500 g/kWh)" % (total_j / J_PER_KWH * 500)) in title and "USD" in title
    assert sum("gCO2e" in t for t in _texts(fig)) == 1 + len(sn.rows)  # the title and each bar
    monkeypatch.setenv("JOULECAP_GRID_GCO2_PER_KWH", "500")
    fig = joulecap.plot(fix / "run-a.csv", fix / "run-b.csv")
    assert sum("gCO2e" in t for t in _texts(fig)) == 2
    # joulecap plot: the options, and hostile values refused before drawing.
    out = tmp_path / "s.png"
    assert plots.main([str(fix / "snippets.csv"), "-o", str(out), "--grid-intensity", "300", "--price", "0.1",
                       "--currency", "EUR"]) == 0 and out.stat().st_size > 0
    assert plots.main([str(fix / "snippets.csv"), "-o", str(tmp_path / "n.png"), "--grid-intensity", "nan"]) == 2
    assert not (tmp_path / "n.png").exists()
