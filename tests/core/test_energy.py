"""Operation counts against closed-form formulas."""

import pytest
import torch
from torch import nn

from core.energy import analog_layers, count_macs, fanout_map, synaptic_fanouts
from core.graph import canonicalize
from tests.conftest import USER_EXPORTERS, export_trained_digits_mlp


def test_linear_fanout_counts_nonzero_weights_per_input():
    layer = nn.Linear(3, 4)
    with torch.no_grad():
        layer.weight.zero_()
        layer.weight[:, 0] = 1.0
        layer.weight[1, 2] = 1.0
    assert fanout_map(layer, torch.Size([1, 3])).tolist() == [4.0, 0.0, 1.0]


def test_conv_macs_match_the_textbook_formula():
    gm = canonicalize(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                    nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8 * 4 * 4, 10)))
    macs = count_macs(synaptic_fanouts(gm, (3, 8, 8)))
    # padded taps are not counted: along each axis the 8 outputs see 2+3·6+2 = 22 inputs
    assert macs["0"] == 22 * 22 * 3 * 8
    assert macs["2"] == 8 * 4 * 4 * 4
    assert macs["4"] == 8 * 4 * 4 * 10


def test_analog_layers_stop_at_the_first_activation():
    gm = canonicalize(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3)))
    assert analog_layers(gm) == {"0"}


# --- hardware profiles and the quantised-ANN baseline -------------------------------------

def test_profiles_are_horowitz_45nm_per_operation_energies():
    from typing import get_args

    from core.hardware import PROFILES, ProfileName

    # Horowitz, ISSCC 2014 (45 nm, 0.9 V): add / multiply in pJ
    expected = {"horowitz-45nm-fp32": (0.9 + 3.7, 0.9), "horowitz-45nm-fp16": (0.4 + 1.1, 0.4),
                "horowitz-45nm-int32": (0.1 + 3.1, 0.1), "horowitz-45nm-int8": (0.03 + 0.2, 0.03)}
    assert set(get_args(ProfileName)) == set(PROFILES) == set(expected)
    for name, (mac, ac) in expected.items():
        assert (PROFILES[name].e_mac_pj, PROFILES[name].e_ac_pj) == pytest.approx((mac, ac))


@pytest.mark.parametrize("steps, bits, profile", [
    (1, 1, "int8"), (2, 2, "int8"), (3, 2, "int8"), (4, 3, "int8"), (8, 4, "int8"),
    (32, 6, "int8"), (255, 8, "int8"), (256, 9, "int32")])
def test_the_quantised_ann_has_the_bits_of_a_spike_count(steps, bits, profile):
    from core.energy import quantised_ann

    baseline = quantised_ann(1_000_000, steps)
    assert baseline.bits == bits and baseline.profile == f"horowitz-45nm-{profile}"
    per_mac = {"int8": 0.23, "int32": 3.2}[profile]
    assert baseline.energy_uj == pytest.approx(per_mac)  # 10⁶ MACs × pJ = µJ


@pytest.mark.parametrize("exporter", USER_EXPORTERS)
def test_a_users_export_costed_on_another_profile(capsys, tmp_path, exporter):
    import json

    from core import cli
    from core.report import Report

    model = export_trained_digits_mlp(tmp_path, exporter)
    reports = {}
    for profile in ("horowitz-45nm-fp32", "horowitz-45nm-int8"):
        out = tmp_path / profile
        assert cli.main(["convert", str(model), "--quiet", "--dataset", "digits", "--method",
                         "robust-norm", "--timesteps", "16", "--eval-samples", "100",
                         "--energy-profile", profile, "--out", str(out)]) == 0
        reports[profile] = Report.model_validate(json.loads((out / "report.json").read_text()))
    printed = capsys.readouterr().out
    fp32, int8 = reports["horowitz-45nm-fp32"], reports["horowitz-45nm-int8"]
    assert (fp32.energy_model.profile, int8.energy_model.profile) == tuple(reports)
    assert int8.energy_model.e_mac_pj == pytest.approx(0.23)
    macs = int8.ann.macs
    assert int8.ann.energy_uj == pytest.approx(macs * 0.23e-6)
    assert fp32.ann.energy_uj == pytest.approx(macs * 4.6e-6)
    # T = 16 spikes count 0 … 16: a 5-bit integer ANN, costed on 8-bit integer MACs
    assert (int8.ann.quantised.bits, int8.ann.quantised.profile) == (5, "horowitz-45nm-int8")
    assert int8.ann.quantised.energy_uj == pytest.approx(macs * 0.23e-6)
    assert "as a 5-bit integer ANN (the bits 16 steps of spikes count)" in printed
    # the same spikes on other hardware: what is left after the SOPs is the analog MACs
    a, b = fp32.methods[0], int8.methods[0]
    assert a.sops == b.sops
    for e_fp32, e_int8, sops in zip(a.energy_uj, b.energy_uj, a.sops, strict=True):
        analog_fp32 = (e_fp32 - 0.9e-6 * sops) / 4.6e-6
        analog_int8 = (e_int8 - 0.03e-6 * sops) / 0.23e-6
        assert analog_fp32 == pytest.approx(analog_int8, rel=1e-6, abs=1e-3)
        assert analog_fp32 == pytest.approx(64 * 48, rel=1e-6)  # digits: 8×8 inputs × 48 units
