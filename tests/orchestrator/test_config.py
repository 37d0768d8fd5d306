"""job.toml: every mistake a scientist can make is one line naming the key, exit 2."""

from __future__ import annotations

import dataclasses
import re
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


@pytest.mark.parametrize(
    ("job", "privacy", "sites", "needle"),
    [
        ('rounds = "abc"', PRIVACY, SITE, "[job]: rounds must be an integer (got 'abc')"),
        ('rounds = "3"', PRIVACY, SITE, "[job]: rounds must be an integer (got '3')"),
        ("rounds = 2.5", PRIVACY, SITE, "[job]: rounds must be an integer (got 2.5)"),
        ("rounds = true", PRIVACY, SITE, "[job]: rounds must be an integer (got True)"),
        ('lr = "fast"', PRIVACY, SITE, "[job]: lr must be a number (got 'fast')"),
        ("model = 18", PRIVACY, SITE, "[job]: model must be a string (got 18)"),
        ("round_timeout = [1]", PRIVACY, SITE, "[job]: round_timeout must be a number (got [1])"),
        ("", PRIVACY + 'dp = "no"\n', SITE, "[privacy]: dp must be true or false (got 'no')"),
        ("", PRIVACY + 'noise_multiplier = "1.0"\n', SITE,
         "[privacy]: noise_multiplier must be a number (got '1.0')"),
        ("", "[privacy]\nhe_public_key = 7\n", SITE, "[privacy]: he_public_key must be a string (got 7)"),
        ("", PRIVACY, SITE.replace('name = "a"', "name = 1"), "[[sites]] #1: name must be a string (got 1)"),
        ("", PRIVACY + '[baseline]\ncount = "many"\n', SITE,
         "[baseline]: count must be an integer (got 'many')"),
        ("", PRIVACY + "[baseline]\nimage_size = 28.0\n", SITE,
         "[baseline]: image_size must be an integer (got 28.0)"),
    ],
)
def test_config_type_errors_name_the_key(
    tmp_path: Path, job: str, privacy: str, sites: str, needle: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, f'dataset = "c"\n{job}', sites, privacy))
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_config_numbers_accept_integers(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, 'dataset = "c"\nlr = 1\nround_timeout = 60',
                               privacy=PRIVACY + "max_grad_norm = 2\n"))
    assert config.lr == 1 and config.round_timeout == 60 and config.privacy.max_grad_norm == 2


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('[job]\ndataset = "c"\nround = 3\n' + PRIVACY + SITE,
         "unknown key(s) ['round']; did you mean 'rounds'?"),
        ('[job]\ndataset = "c"\n' + PRIVACY + "noise_multipler = 2.0\n" + SITE,
         "[privacy]: unknown key(s) ['noise_multipler']; did you mean 'noise_multiplier'?"),
        ('[job]\ndataset = "c"\n' + PRIVACY + SITE.replace("email", "mail"),
         "[[sites]] #1: unknown key(s) ['mail']; did you mean 'email'?"),
        ('[job]\ndataset = "c"\n' + PRIVACY + "[privcy]\ndp = false\n" + SITE,
         "unknown table or key(s) ['privcy']; did you mean [privacy]?"),
        ('[job]\ndataset = "c"\n[site]\nname = "a"\n',
         "unknown table or key(s) ['site']; did you mean [[sites]]?"),
        ('job = 3\n', "[job] must be a table (got job = 3)"),
        ('[job]\ndataset = "c"\n[sites]\nname = "a"\n', "sites must be [[sites]] tables"),
        ('privacy = 1\n[job]\ndataset = "c"\n' + SITE, "[privacy] must be a table"),
    ],
)
def test_config_unknown_or_misshapen_tables(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "job.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert needle in str(err.value)


@pytest.mark.parametrize(
    ("job", "needle"),
    [
        ("batch_size = 0", "batch_size must be >= 1"),
        ("lr = 0.0", "lr must be > 0"),
        ("approval_timeout = -5", "approval_timeout must be > 0"),
        ("val_fraction = 1.0", "val_fraction must be in (0, 1)"),
    ],
)
def test_config_value_errors_name_the_key(tmp_path: Path, job: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(needle)):
        load_config(write(tmp_path, f'dataset = "c"\n{job}'))


def test_train_cli_type_error_is_one_line(tmp_path: Path) -> None:
    result = run_cli("train", "--config", str(write(tmp_path, 'dataset = "c"\nrounds = "abc"')))
    assert result.code == 2 and result.err.count("\n") == 1
    assert "rounds must be an integer (got 'abc')" in result.err and "Traceback" not in result.err


def test_config_roster_is_a_path_and_a_bad_roster_file_is_one_line(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, 'dataset = "c"', privacy=PRIVACY + 'roster = "keys/roster.json"\n'))
    assert config.privacy.roster_path(config.base_dir) == tmp_path / "keys/roster.json"
    off = load_config(write(tmp_path, 'dataset = "c"', privacy='[privacy]\nhe = false\nroster = "r.json"\n'))
    assert off.privacy.roster_path(off.base_dir) is None  # no HE: nothing to verify
    for bad, needle in (("roster = 7", "roster must be a string (got 7)"),
                        ('roster = ""', "roster must be the path of roster.json"),
                        ('rooster = "r.json"', "did you mean 'roster'?")):
        with pytest.raises(ConfigError, match=re.escape(needle)):
            load_config(write(tmp_path, 'dataset = "c"', privacy=PRIVACY + bad + "\n"))
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "roster.json").write_text('{"role": "roster"}')
    path = write(tmp_path, 'dataset = "c"', privacy=PRIVACY + 'roster = "keys/roster.json"\n')
    result = run_cli("train", "--config", str(path))
    assert result.code == 2 and result.err.count("\n") == 1 and "[privacy] roster:" in result.err


NO_HE = "[privacy]\nhe = false\n"
SITE_B = SITE.replace('name = "a"', 'name = "b"')
JOB = '[job]\ndataset = "c"\n'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a value of the wrong TOML type, for each kind of field
        (JOB + 'rounds = "3"\n' + PRIVACY + SITE, "[job]: rounds must be an integer (got '3')"),
        (JOB + 'rounds = 3.5\n' + PRIVACY + SITE, "[job]: rounds must be an integer (got 3.5)"),
        (JOB + 'seed = false\n' + PRIVACY + SITE, "[job]: seed must be an integer (got False)"),
        (JOB + 'lr = true\n' + PRIVACY + SITE, "[job]: lr must be a number (got True)"),
        (JOB + 'fraction = "half"\n' + PRIVACY + SITE,
         "[job]: fraction must be a number (got 'half')"),
        ("[job]\ndataset = 7\n" + PRIVACY + SITE, "[job]: dataset must be a string (got 7)"),
        (JOB + 'run_dir = ["a"]\n' + PRIVACY + SITE, "[job]: run_dir must be a string (got ['a'])"),
        (JOB + PRIVACY + "he = 1\n" + SITE, "[privacy]: he must be true or false (got 1)"),
        (JOB + PRIVACY + "target_epsilon = true\n" + SITE,
         "[privacy]: target_epsilon must be a number (got True)"),
        (JOB + PRIVACY + 'roster = ["r.json"]\n' + SITE,
         "[privacy]: roster must be a string (got ['r.json'])"),
        (JOB + PRIVACY + SITE.replace('"PW_A"', "3"),
         "[[sites]] #1: password_env must be a string (got 3)"),
        (JOB + PRIVACY + SITE + SITE_B.replace('"b"', "2"),
         "[[sites]] #2: name must be a string (got 2)"),
        (JOB + PRIVACY + SITE + "[baseline]\nimage_size = true\n",
         "[baseline]: image_size must be an integer (got True)"),
        (JOB + PRIVACY + SITE + "[baseline]\nseed = 1.5\n",
         "[baseline]: seed must be an integer (got 1.5)"),
        (JOB + PRIVACY + SITE + "[baseline]\nsource = 3\n",
         "[baseline]: source must be a string (got 3)"),
        # an unknown key in each table, and at the top
        (JOB + 'epochs = 2\n' + PRIVACY + SITE,
         "[job]: unknown key(s) ['epochs']; did you mean 'local_epochs'?"),
        (JOB + PRIVACY + "nois_multiplier = 2.0\n" + SITE,
         "[privacy]: unknown key(s) ['nois_multiplier']; did you mean 'noise_multiplier'?"),
        (JOB + PRIVACY + SITE + SITE_B + 'pasword_file = "pw"\n',
         "[[sites]] #2: unknown key(s) ['pasword_file']; did you mean 'password_file'?"),
        (JOB + PRIVACY + SITE + "[baseline]\npartitions = \"iid\"\n",
         "[baseline]: unknown key(s) ['partitions']; did you mean 'partition'?"),
        (JOB + 'zzz = 1\nqqq = 2\n' + PRIVACY + SITE, "[job]: unknown key(s) ['qqq', 'zzz']; known:"),
        ('rounds = 3\n[job]\ndataset = "c"\n' + PRIVACY + SITE,
         ": unknown table or key(s) ['rounds']; known: [job], [[sites]], [tls], [privacy], [baseline]"),
        # out of range
        (JOB + 'local_epochs = 0\n' + PRIVACY + SITE, "[job]: local_epochs must be >= 1 (got 0)"),
        (JOB + 'fraction = 0\n' + PRIVACY + SITE, "[job]: fraction must be in (0, 1] (got 0)"),
        (JOB + 'round_timeout = -1\n' + PRIVACY + SITE, "[job]: round_timeout must be > 0 (got -1)"),
        (JOB + 'lr = nan\n' + PRIVACY + SITE, "[job]: lr must be > 0 (got nan)"),
        (JOB + 'val_fraction = 0\n' + PRIVACY + SITE,
         "[job]: val_fraction must be in (0, 1) (got 0)"),
        (JOB + 'min_sites = 0\n' + PRIVACY + SITE,
         "[job]: min_sites must be between 1 and the number of sites (1), got 0"),
        (JOB + PRIVACY + "weight_bound = -4.0\n" + SITE,
         "[privacy]: weight_bound must be > 0 (got -4.0)"),
        (JOB + PRIVACY + "max_grad_norm = inf\n" + SITE,
         "[privacy]: max_grad_norm must be a finite number > 0 (got inf)"),
        (JOB + PRIVACY + "eval_noise_multiplier = 0\n" + SITE,
         "[privacy]: eval_noise_multiplier must be a finite number > 0 (got 0.0)"),
        # missing required keys
        (PRIVACY + SITE, '[job] needs dataset = "chest-xray"'),
        (JOB + PRIVACY + SITE.replace('url = "http://127.0.0.1:1"\n', ""),
         '[[sites]] #1 needs url = "http://127.0.0.1:8081"'),
        (JOB + PRIVACY + SITE + SITE_B.replace('name = "b"\n', ""),
         '[[sites]] #2 needs name = "hospital-a"'),
        (JOB + PRIVACY, ": at least one [[sites]] entry is needed"),
        # bad combinations
        (JOB + PRIVACY + "target_epsilon = 8.0\nnoise_multiplier = 1.0\n" + SITE,
         "[privacy]: give exactly one of noise_multiplier and target_epsilon "
         "(got noise_multiplier=1.0, target_epsilon=8.0)"),
        (JOB + '[privacy]\nroster = "keys/roster.json"\n' + SITE,
         "[privacy]: he is on by default: set he_public_key"),
        (JOB + 'min_sites = 3\n' + PRIVACY + SITE + SITE_B,
         "[job]: min_sites must be between 1 and the number of sites (2), got 3"),
        (JOB + PRIVACY + SITE + SITE_B + SITE,
         "[[sites]]: site names must be unique (got ['a', 'b', 'a'])"),
        ("job = []\n" + PRIVACY + SITE, "[job] must be a table (got job = [])"),
        (JOB + 'sites = [1]\n' + PRIVACY, "[job]: unknown key(s) ['sites']"),
        ('sites = [1]\n[job]\ndataset = "c"\n' + PRIVACY, "[[sites]] #1 must be a table (got 1)"),
        (JOB + 'strategy = "fedadam2"\n' + PRIVACY + SITE,
         "[job]: strategy must be one of 'fedavg', 'fedprox', 'fedmedian', 'trimmed-mean', 'fedavgm', "
         "'fedadam' or 'fedyogi' (got 'fedadam2')"),
        # server optimizers: their keys only with them, in range; under HE every site every round
        (JOB + 'server_lr = 0.1\n' + PRIVACY + SITE,
         "[job]: server_lr is a server optimizer's learning rate η: set strategy = \"fedavgm\" or "
         "\"fedadam\" or \"fedyogi\", or remove it (strategy is 'fedavg')"),
        (JOB + 'strategy = "fedavgm"\nserver_beta2 = 0.9\n' + PRIVACY + SITE,
         "[job]: server_beta2 is FedAdam's and FedYogi's second-moment decay β2: set strategy = "
         "\"fedadam\" or \"fedyogi\""),
        (JOB + 'strategy = "fedprox"\nproximal_mu = 0.1\nserver_tau = 0.1\n' + PRIVACY + SITE,
         "[job]: server_tau is FedAdam's and FedYogi's adaptivity τ"),
        (JOB + 'strategy = "fedadam"\nserver_lr = 0\n' + PRIVACY + SITE,
         "[job]: server_lr must be > 0 (got 0)"),
        (JOB + 'strategy = "fedavgm"\nserver_momentum = 1.0\n' + PRIVACY + SITE,
         "[job]: server_momentum must be in [0, 1) (got 1.0)"),
        (JOB + 'strategy = "fedyogi"\nserver_beta2 = -0.1\n' + PRIVACY + SITE,
         "[job]: server_beta2 must be in [0, 1) (got -0.1)"),
        (JOB + 'strategy = "fedyogi"\nserver_tau = 0\n' + PRIVACY + SITE,
         "[job]: server_tau must be > 0 (got 0)"),
        (JOB + 'strategy = "fedadam"\nserver_lr = "0.1"\n' + PRIVACY + SITE,
         "[job]: server_lr must be a number (got '0.1')"),
        (JOB + 'strategy = "fedadam"\nfraction = 0.5\n' + PRIVACY + SITE,
         "[job]: strategy = 'fedadam' under encrypted aggregation needs fraction = 1.0 (got 0.5): every site "
         "takes the server step itself"),
        (JOB + 'strategy = "fedprox"\n' + PRIVACY + SITE,
         '[job]: strategy = "fedprox" needs proximal_mu = 0.01'),
        (JOB + 'proximal_mu = 0.1\n' + PRIVACY + SITE, "[job]: proximal_mu is FedProx's term"),
        (JOB + 'strategy = "fedprox"\nproximal_mu = -1\n' + PRIVACY + SITE,
         "[job]: proximal_mu must be >= 0 (got -1)"),
        (JOB + 'strategy = "trimmed-mean"\ntrim_fraction = 0.5\n' + '[privacy]\nhe = false\n' + SITE,
         "[job]: trim_fraction must be in [0, 0.5) (got 0.5)"),
        (JOB + 'strategy = "fedmedian"\n' + PRIVACY + SITE,
         "[job]: strategy = 'fedmedian' cannot run under encrypted aggregation: additive HE can only add"),
        (JOB + 'strategy = "trimmed-mean"\n' + PRIVACY + SITE,
         "[job]: strategy = 'trimmed-mean' cannot run under encrypted aggregation"),
        (JOB + 'class_weights = "inverse"\n' + PRIVACY + SITE,
         "[job]: class_weights must be one of 'none' or 'balanced' (got 'inverse')"),
        (JOB + PRIVACY + '[evaluation]\nbins = 7\n' + SITE,
         "[evaluation]: bins must divide 200 and be at least 2 (got 7); e.g. 4, 10 or 20"),
        (JOB + PRIVACY + '[evaluation]\nnoise_multiplier = 0\n' + SITE,
         "[evaluation]: noise_multiplier must be > 0 (got 0.0): the test counts are always released"),
        (JOB + PRIVACY + '[evaluation]\ndatset = "t"\n' + SITE,
         "[evaluation]: unknown"),
        (JOB + PRIVACY + '[tracking]\nbackend = "wandb"\n' + SITE,
         "[tracking]: backend must be one of 'mlflow' or 'tensorboard' (got 'wandb')"),
        (JOB + PRIVACY + '[tracking]\nuri = "sqlite:///m.db"\n' + SITE,
         '[tracking]: uri needs a backend: set backend = "mlflow" or "tensorboard"'),
        (JOB + PRIVACY + '[tracking]\nbackend = "mlflow"\nexperiment = " "\n' + SITE,
         "[tracking]: experiment must not be empty"),
    ],
)
def test_config_bad_input_is_one_line_naming_table_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "job.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert message.startswith(f"{path}{expected}" if expected.startswith(":") else f"{path} {expected}")
    assert "\n" not in message


def test_config_typo_is_reported_before_the_errors_it_causes(tmp_path: Path) -> None:
    # `[privcy]` leaves [privacy] at its defaults, where HE has no key: the typo is the real problem.
    path = tmp_path / "job.toml"
    path.write_text('[job]\ndataset = "c"\n[privcy]\nhe = false\n' + SITE)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "unknown table or key(s) ['privcy']; did you mean [privacy]?" in str(err.value)


def test_config_defaults_are_the_dataclasses_defaults(tmp_path: Path) -> None:
    from orchestrator.config import JobConfig, PrivacyConfig, SiteConfig

    config = load_config(write(tmp_path, 'dataset = "c"', privacy=NO_HE))
    site = SiteConfig(name="a", url="http://127.0.0.1:1", email="x@y.example", password_env="PW_A")
    assert config == JobConfig(dataset="c", sites=[site], privacy=PrivacyConfig(he=False))
    assert dataclasses.replace(config, rounds=9).rounds == 9  # still a dataclass for notebooks


def test_config_numbers_become_floats_and_disabled_dp_is_not_checked(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, 'dataset = "c"\nlr = 1',
                               privacy=NO_HE + "dp = false\nnoise_multiplier = -1\n"))
    assert isinstance(config.lr, float) and config.privacy.noise_multiplier == -1.0


@pytest.mark.parametrize(
    ("command", "job", "privacy", "needle"),
    [
        ("train", 'dataset = "c"\nrounds = true', PRIVACY, "[job]: rounds must be an integer (got True)"),
        ("train", 'dataset = "c"', PRIVACY + "nois_multiplier = 2.0\n",
         "[privacy]: unknown key(s) ['nois_multiplier']; did you mean 'noise_multiplier'?"),
        ("baseline", 'dataset = "c"\nfraction = 2', PRIVACY, "[job]: fraction must be in (0, 1] (got 2)"),
        ("release", "rounds = 2", PRIVACY, '[job] needs dataset = "chest-xray"'),
        ("evaluate", 'dataset = "c"', PRIVACY + "\n[evaluation]\nbins = 7\n",
         "[evaluation]: bins must divide 200 and be at least 2 (got 7); e.g. 4, 10 or 20"),
    ],
)
def test_cli_bad_job_toml_is_one_line_exit_2(
    tmp_path: Path, command: str, job: str, privacy: str, needle: str
) -> None:
    path = write(tmp_path, job, privacy=privacy)
    result = run_cli(command, "--config", str(path))
    assert result.code == 2 and result.out == ""
    assert result.err == f"medsyft: error: {path} {needle}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.toml"]  # no run directory was made


def test_config_server_optimizers_take_flowers_defaults_unless_set(tmp_path: Path) -> None:
    from domains.shared.server_step import ServerStep

    yogi = load_config(write(tmp_path, 'dataset = "c"\nstrategy = "fedyogi"\nserver_lr = 0.05'))
    assert yogi.server_step() == ServerStep(kind="fedyogi", lr=0.05, momentum=0.9, beta2=0.99, tau=1e-3)
    # in plaintext the orchestrator takes the step, so a share of the sites per round is fine
    momentum = load_config(write(tmp_path, 'dataset = "c"\nstrategy = "fedavgm"\nfraction = 0.5\n'
                                 "server_momentum = 0.9", privacy=NO_HE))
    assert momentum.server_step() == ServerStep(kind="fedavgm", lr=1.0, momentum=0.9)
    assert load_config(write(tmp_path, 'dataset = "c"', privacy=NO_HE)).server_step() is None


def test_config_augment_and_lr_schedule_reach_the_training_config(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, 'dataset = "c"\naugment = "affine"\nlr_schedule = "cosine"',
                               privacy=NO_HE))
    assert (config.augment, config.lr_schedule) == ("affine", "cosine")
    plain = load_config(write(tmp_path, 'dataset = "c"', privacy=NO_HE))
    assert (plain.augment, plain.lr_schedule) == ("none", "constant")
    for text, message in (('augment = "mixup"', "augment must be one of 'none' or 'affine' (got 'mixup')"),
                          ('lr_schedule = "step"',
                           "lr_schedule must be one of 'constant' or 'cosine' (got 'step')")):
        path = write(tmp_path, f'dataset = "c"\n{text}', privacy=NO_HE)
        with pytest.raises(ConfigError) as err:
            load_config(path)
        assert str(err.value) == f"{path} [job]: {message}"


def test_config_augment_multiplicity_reaches_the_job_and_needs_a_warp(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, 'dataset = "c"\naugment = "affine"\naugment_multiplicity = 4',
                               privacy=NO_HE))
    assert config.augment_multiplicity == 4
    assert load_config(write(tmp_path, 'dataset = "c"', privacy=NO_HE)).augment_multiplicity == 1
    for text, message in (("augment_multiplicity = 4",
                           'augment_multiplicity = 4 needs augment = "affine": copies of an image without a '
                           "warp are the same image"),
                          ('augment = "affine"\naugment_multiplicity = 64',
                           "augment_multiplicity must be in [1, 32] (got 64)")):
        path = write(tmp_path, f'dataset = "c"\n{text}', privacy=NO_HE)
        with pytest.raises(ConfigError) as err:
            load_config(path)
        assert str(err.value) == f"{path} [job]: {message}"


def test_a_named_recipe_fills_in_the_keys_the_file_leaves_out(tmp_path: Path) -> None:
    from orchestrator.recipes import RECIPES

    text = 'dataset = "c"\nrecipe = "dp-logit-adjusted"\nrounds = 4'
    config = load_config(write(tmp_path, text, privacy=NO_HE))
    values = RECIPES["dp-logit-adjusted"].values
    assert config.recipe == "dp-logit-adjusted" and config.rounds == 4  # the file wins
    for key in ("lr", "batch_size", "optimizer", "loss", "logit_tau", "class_weights", "model"):
        assert getattr(config, key) == values[key], key
    path = write(tmp_path, 'dataset = "c"\nrecipe = "dp-fast"', privacy=NO_HE)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == (f"{path} [job]: unknown recipe 'dp-fast'; "
                              "choose one of dp-logit-adjusted, plain-augmented")


def test_the_centralized_baseline_trains_each_round_at_the_sites_scheduled_rate(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The baseline's "rounds" take TrainConfig.for_round, as the sites' rounds do (entry.py):
    the same learning rate and shuffle per round. Training itself is replaced by a recorder here
    (the wiring is under test, not torch); tests/integration runs the real baseline."""
    import orchestrator.baseline as baseline
    from domains.shared import TrainConfig
    from domains.shared.spec import JobSpec

    config = load_config(write(tmp_path, 'dataset = "c"\nrounds = 3\nlr_schedule = "cosine"', privacy=NO_HE))
    config = dataclasses.replace(config, baseline=dataclasses.replace(config.baseline, count=60))
    train = TrainConfig(lr=0.1, seed=2, lr_schedule="cosine")
    spec = JobSpec(dataset="c", model="small-cnn", in_channels=1, num_classes=2, image_size=28,
                   multi_label=False, rounds=3, train=train, dp=None, sites=("a",))
    seen: list[TrainConfig] = []
    monkeypatch.setattr(baseline, "train_local", lambda *a, config, **k: seen.append(config))
    baseline.train_centralized(config, spec)
    assert seen == [train.for_round(r, 3) for r in (1, 2, 3)]
    assert seen[0].lr == 0.1 and seen[2].lr < seen[1].lr < 0.1


def test_tls_files_come_from_the_tls_table_and_a_site_overrides_them(tmp_path: Path) -> None:
    for name in ("ca.crt", "client.crt", "client.key", "own-ca.crt"):
        (tmp_path / name).write_text("PEM")
    tls = '[tls]\nca_file = "ca.crt"\nclient_cert = "client.crt"\nclient_key = "client.key"\n'
    own = SITE.replace('"http://127.0.0.1:1"', '"https://a.example:8443"') + 'ca_file = "own-ca.crt"\n'
    plain = SITE.replace('name = "a"', 'name = "b"')
    config = load_config(write(tmp_path, 'dataset = "c"', sites=tls + own + plain))
    a, b = (site.tls(config.base_dir) for site in config.sites)
    assert a.ca_file == tmp_path / "own-ca.crt" and a.cert_file == tmp_path / "client.crt"
    assert b.ca_file == tmp_path / "ca.crt" and b.key_file == tmp_path / "client.key"  # [tls], even for http
    bare = load_config(write(tmp_path, 'dataset = "c"'))
    assert bare.sites[0].tls(bare.base_dir) is None  # plain http on loopback, no TLS files


@pytest.mark.parametrize(("sites", "needle"), [
    ('[tls]\nclient_cert = "c.crt"\n' + SITE, r"\[tls\]: client_cert and client_key go together"),
    (SITE + 'client_key = "c.key"\n', r"\[\[sites\]\]: client_cert and client_key go together"),
    ('[tls]\nca = "x"\n' + SITE, r"\[tls\]: unknown key"),
])
def test_tls_mistakes_are_one_line_naming_the_table(tmp_path: Path, sites: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_config(write(tmp_path, 'dataset = "c"', sites=sites))


def test_a_missing_tls_file_names_the_site_and_the_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, 'dataset = "c"', sites='[tls]\nca_file = "nope.crt"\n' + SITE))
    with pytest.raises(ConfigError, match=r"site 'a': ca_file .*nope\.crt does not exist"):
        config.sites[0].tls(config.base_dir)


def test_config_eval_every_is_read_and_must_be_positive(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, 'dataset = "c"\nrounds = 4\neval_every = 2', privacy=NO_HE))
    assert config.eval_every == 2
    assert load_config(write(tmp_path, 'dataset = "c"', privacy=NO_HE)).eval_every == 1
    path = write(tmp_path, 'dataset = "c"\neval_every = 0', privacy=NO_HE)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path} [job]: eval_every must be")
