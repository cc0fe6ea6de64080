import pytest

from ftl.cli import main
from ftl.federation import Transcript


@pytest.mark.slow
def test_demo_runs_end_to_end_on_real_key_size(tmp_path, capsys):
    path = tmp_path / "demo.jsonl"
    assert main(["demo", "--rows", "1200", "--n-jobs", "1", "--transcript", str(path)]) == 0
    out = capsys.readouterr().out
    for needle in (
        "intersection size",
        "test AUC, federated",
        "sklearn on pooled",
        "bytes exchanged",
        "messages by value kind",
        "full transcript",
    ):
        assert needle in out
    transcript = Transcript.from_jsonl(path)
    assert len(transcript) > 10
    assert main(["report", str(path)]) == 0
    assert "lr.contribution" in capsys.readouterr().out


def test_demo_plaintext_mode_says_so(tmp_path, capsys):
    path = tmp_path / "demo.jsonl"
    assert main(["demo", "--rows", "800", "--encryption", "none", "--transcript", str(path)]) == 0
    out = capsys.readouterr().out
    assert "PLAINTEXT" in out
    # the gap is federated - pooled, with its sign explained in words
    fed = float(out.split("test AUC, federated")[1].split()[0])
    pooled = float(out.split("test AUC, sklearn on pooled")[1].split()[0])
    gap_line = out.split("gap, federated - pooled")[1].splitlines()[0]
    assert float(gap_line.split()[0]) == pytest.approx(fed - pooled, abs=1.5e-4)
    assert ("below" in gap_line) == (fed < pooled - 5e-5)
    assert "add up to more than the messages" in out
    assert f"ftl report {path}" in out


def test_python_dash_m_ftl_runs_the_cli():
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "ftl", "--help"], capture_output=True, text=True, check=True
    )
    assert "demo" in out.stdout and "report" in out.stdout


def test_serve_config_errors_are_one_line_with_exit_code_2(tmp_path):
    """An operator's config mistake is one line on stderr (no traceback), exit code 2,
    and a missing column is named next to the columns that exist."""
    import subprocess
    import sys

    from ftl.federation.certs import make_certificates

    make_certificates(tmp_path / "certs", ["bank", "shop"])
    (tmp_path / "shop.csv").write_text("id,a,b\n1,0.5,1\n2,0.1,2\n")
    config = tmp_path / "shop.toml"
    config.write_text(
        f"""
[party]
name = "shop"
data = "shop.csv"
id_column = "customer_id"

[server]
listen = "127.0.0.1:0"

[tls]
cert = "{tmp_path / "certs" / "shop.crt"}"
key = "{tmp_path / "certs" / "shop.key"}"
ca = "{tmp_path / "certs" / "ca.crt"}"

[[policy.peers]]
identity = "bank"
"""
    )
    for text, needle in [
        (config.read_text(), "id_column 'customer_id' is not a column"),
        (config.read_text().replace("[server]", "[server]\ncolour = 1"), "unknown setting"),
    ]:
        config.write_text(text)
        out = subprocess.run(
            [sys.executable, "-m", "ftl", "serve", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 2
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in out.stderr
        assert lines[0].startswith("ftl serve: error:") and needle in lines[0]
    config.write_text(config.read_text().replace("colour = 1", ""))
    out = subprocess.run(
        [sys.executable, "-m", "ftl", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "its columns: 'id', 'a', 'b'" in out.stderr
