"""python -m vit_ms.serve's arguments: defaults, refused values, a taken port, what counts as this machine only."""
import pytest

from vit_ms.errors import UserError, run_cli
from vit_ms.serve.cli import bind, is_loopback, main, parse_args


def test_defaults_bind_this_machine_only():
    args = parse_args(["--ckpt", "runs/demo/best.ckpt"])
    assert (args.host, args.port, args.token) == ("127.0.0.1", 8000, None)
    assert (args.batch_size, args.max_wait_ms, args.max_images, args.max_body_mb) == (16, 5.0, 16, 20.0)
    assert (args.body_timeout_s, args.max_image_pixels) == (30.0, None)  # None: sized from the model's input


@pytest.mark.parametrize("argv, words", [
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--max-images", "0"], "--max-images must be at least 1"),
    (["--port", "70000"], "--port must be between 0 and 65535"),
    (["--max-body-mb", "0"], "--max-body-mb and --body-timeout-s more than 0"),
    (["--body-timeout-s", "0"], "--body-timeout-s more than 0"),
    (["--max-image-pixels", "0"], "--max-image-pixels must be at least 1"),
])
def test_refused_values(argv, words, capsys):
    with pytest.raises(SystemExit) as stop:
        parse_args(["--ckpt", "x.ckpt", *argv])
    assert stop.value.code == 2 and words in capsys.readouterr().err


def test_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")


def test_a_taken_port_is_one_paragraph():
    taken = bind("127.0.0.1", 0)
    try:
        port = taken.getsockname()[1]
        with pytest.raises(UserError, match=rf"cannot listen on 127.0.0.1:{port} .*pick a free port with --port"):
            bind("127.0.0.1", port)
    finally:
        taken.close()


def test_a_missing_checkpoint_exits_2_before_serving(tmp_path, capsys):
    missing = tmp_path / "nothing.ckpt"
    assert run_cli(main, ["--ckpt", str(missing), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nothing.ckpt" in err and "Traceback" not in err
