"""job.toml: every mistake a scientist can make is one line naming the key, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import run_cli

from orchestrator.config import load_config
from orchestrator.errors import ConfigError

SITE = '[[sites]]\nname = "a"\nurl = "http://127.0.0.1:1"\nemail = "x@y.example"\npassword_env = "PW_A"\n'


PRIVACY = '[privacy]\nhe_public_key = "keys/orchestrator-public.medsyftkey"\n'


def write(tmp_path: Path, job: str, sites: str = SITE, privacy: str = PRIVACY) -> Path:
    path = tmp_path / "job.toml"
    path.write_text(f"[job]\n{job}\n\n{privacy}\n{sites}")
    return path


def test_config_loads_with_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, 'dataset = "chest"\nrounds = 4'))
    assert (config.rounds, config.model, config.min_sites) == (4, "auto", 1)
    assert config.run_path == (tmp_path / "runs/job").resolve()
    privacy = config.privacy
    assert privacy.dp and privacy.he and privacy.sigma == 1.0  # both protections on by default
    assert privacy.key_path(config.base_dir) == tmp_path / "keys/orchestrator-public.medsyftkey"


def test_config_privacy_is_on_unless_turned_off_explicitly(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="he is on by default: set he_public_key"):
        load_config(write(tmp_path, 'dataset = "c"', privacy=""))
    config = load_config(write(tmp_path, 'dataset = "c"', privacy="[privacy]\ndp = false\nhe = false\n"))
    assert not config.privacy.dp and not config.privacy.he
    target = load_config(write(tmp_path, 'dataset = "c"', privacy=PRIVACY + "target_epsilon = 3.0\n"))
    assert target.privacy.sigma is None and target.privacy.dp_config().target_epsilon == 3.0


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ("noise_multiplier = 1.0\ntarget_epsilon = 3.0",
         "exactly one of noise_multiplier and target_epsilon"),
        ("noise_multiplier = -1.0", "noise_multiplier"),
        ("max_grad_norm = 0", "max_grad_norm"),
        ("weight_bound = 0", "weight_bound must be > 0"),
        ("epsilon = 3", "[privacy]: unknown key(s) ['epsilon']"),
    ],
)
def test_config_privacy_errors_name_the_key(tmp_path: Path, extra: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, 'dataset = "c"', privacy=PRIVACY + extra + "\n"))
    assert needle in str(err.value)


@pytest.mark.parametrize(
    ("job", "sites", "needle"),
    [
        ('dataset = "c"\nrounds = 0', SITE, "rounds must be >= 1"),
        ('dataset = "c"\nmin_sites = 3', SITE, "min_sites must be between 1 and the number of sites"),
        ('dataset = "c"\nfraction = 1.5', SITE, "fraction must be in (0, 1]"),
        ('dataset = "c"\nlearning_rate = 0.1', SITE, "unknown key(s) ['learning_rate']"),
        ('rounds = 2', SITE, "[job] needs dataset"),
        ('dataset = "c"', "", "at least one [[sites]]"),
        ('dataset = "c"', SITE + SITE, "site names must be unique"),
        ('dataset = "c"', SITE.replace('email = "x@y.example"\n', ""), "[[sites]] #1"),
    ],
)
def test_config_errors_name_the_problem(tmp_path: Path, job: str, sites: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, job, sites))
    assert needle in str(err.value)


def test_config_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "job.toml"
    bad.write_text("[job\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")


def test_site_password_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(write(tmp_path, 'dataset = "c"'))
    site = config.sites[0]
    monkeypatch.delenv("PW_A", raising=False)
    with pytest.raises(ConfigError, match="PW_A is not set"):
        site.password(tmp_path)
    monkeypatch.setenv("PW_A", "s3cret-value")
    assert site.password(tmp_path) == "s3cret-value"
    filed = SITE.replace('password_env = "PW_A"', 'password_file = "nope.txt"')
    config = load_config(write(tmp_path, 'dataset = "c"', filed))
    with pytest.raises(ConfigError, match=r"nope\.txt"):
        config.sites[0].password(tmp_path)


def test_train_cli_config_error_is_one_line(tmp_path: Path) -> None:
    result = run_cli("train", "--config", str(write(tmp_path, 'dataset = "c"\nrounds = -1')))
    assert result.code == 2 and result.err.count("\n") == 1 and "rounds must be >= 1" in result.err


def test_train_cli_unreachable_site_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PW_A", "whatever")
    result = run_cli("train", "--config", str(write(tmp_path, 'dataset = "c"')))
    assert result.code == 2 and "does not answer at http://127.0.0.1:1" in result.err
