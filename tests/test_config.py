"""The package's global switches (sklearn_hemo.get_config / set_config / config_context)."""

import subprocess
import sys

import pytest

import sklearn_hemo
from sklearn_hemo import _cache, _config, config_context, get_config, set_config
from sklearn_hemo._motion import MOTION_ENV, motion_enabled
from sklearn_hemo.signal import VOF_ENV, vof_correction_default


def test_defaults_come_from_the_environment(monkeypatch):
    monkeypatch.delenv(VOF_ENV, raising=False)
    monkeypatch.delenv(MOTION_ENV, raising=False)
    monkeypatch.delenv("SKLEARN_HEMO_MAX_VOXELS", raising=False)
    config = get_config()
    assert config == {"max_image_voxels": 1 << 28, "check_on_first_use": False,
                      "cache_bytes": _cache.CACHE.max_bytes, "aif_vof": True,
                      "motion_correction": True}
    monkeypatch.setenv(VOF_ENV, "off")
    monkeypatch.setenv(MOTION_ENV, "off")
    monkeypatch.setenv("SKLEARN_HEMO_MAX_VOXELS", "5000")
    assert get_config()["aif_vof"] is False and get_config()["max_image_voxels"] == 5000
    assert get_config()["motion_correction"] is False
    # the config, signal and the motion step read one variable each
    assert _config.VOF_ENV == VOF_ENV and _config.MOTION_ENV == MOTION_ENV


def test_config_context_sets_and_restores(monkeypatch):
    monkeypatch.delenv(VOF_ENV, raising=False)
    monkeypatch.delenv(MOTION_ENV, raising=False)
    before = get_config()
    with config_context(aif_vof=False, cache_bytes=1234, check_on_first_use=True,
                        max_image_voxels=99, motion_correction=False):
        assert get_config() == {"max_image_voxels": 99, "check_on_first_use": True,
                                "cache_bytes": 1234, "aif_vof": False,
                                "motion_correction": False}
        # the signal chain (and worker processes, through the environment) see it
        assert vof_correction_default() is False and _cache.CACHE.max_bytes == 1234
        assert motion_enabled() is False
    assert get_config() == before and vof_correction_default() is True
    assert motion_enabled() is True


def test_set_config_keeps_what_it_is_not_given():
    before = get_config()
    try:
        set_config(cache_bytes=4096)
        assert get_config() == {**before, "cache_bytes": 4096}
    finally:
        set_config(cache_bytes=before["cache_bytes"])


@pytest.mark.parametrize("bad", [{"cache_bytes": -1}, {"max_image_voxels": 0},
                                 {"aif_vof": "off"}, {"check_on_first_use": 1},
                                 {"motion_correction": "off"}])
def test_invalid_switches_are_refused(bad):
    with pytest.raises(ValueError):
        set_config(**bad)
    with pytest.raises(ValueError):
        config_context(**bad)


def test_importing_the_package_stays_light():
    # `sklearn-hemo --help` imports the package and the parser only: no scikit-learn
    code = ("import sys, sklearn_hemo, sklearn_hemo._cli_parsers; "
            "assert 'sklearn' not in sys.modules, 'sklearn imported'; "
            "assert callable(sklearn_hemo.get_config)")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert "get_config" in sklearn_hemo.__all__
