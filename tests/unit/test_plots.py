"""Plots are written only as PNG or SVG, and a missing matplotlib is one clear error."""

from __future__ import annotations

import sys

import pytest

from controller.cli.plots import check_plot_path, plot_forecast
from controller.core.errors import InputError


def test_a_plot_must_be_png_or_svg_in_a_directory_that_exists(tmp_path):
    check_plot_path(tmp_path / "a.PNG")
    check_plot_path(tmp_path / "a.svg")
    with pytest.raises(InputError, match=r"--plot .*a\.jpg: the file must end in \.png or \.svg"):
        check_plot_path(tmp_path / "a.jpg")
    with pytest.raises(InputError, match="no directory"):
        check_plot_path(tmp_path / "missing" / "a.png")


def test_without_matplotlib_a_plot_is_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what an absent package looks like to import
    with pytest.raises(InputError, match="--plot needs matplotlib, which is not installed"):
        plot_forecast({}, 20, tmp_path / "a.png", "forecast")
    assert not (tmp_path / "a.png").exists()
