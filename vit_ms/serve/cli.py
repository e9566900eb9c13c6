"""python -m vit_ms.serve --ckpt runs/demo/best.ckpt: a page and a JSON API for one trained model.

    python -m vit_ms.serve --ckpt runs/demo/best.ckpt                  # http://127.0.0.1:8000/
    python -m vit_ms.serve --ckpt vit_b16.augreg_in21k_ft_in1k         # a published weights name
    python -m vit_ms.serve --ckpt runs/demo/best.onnx                  # an export (its .json sidecar beside it)
    python -m vit_ms.serve --ckpt runs/demo/best.ckpt --host 0.0.0.0 --token SECRET   # reachable from others

The model is loaded once and compiled for every batch size before the server listens. See docs/serving.md.
"""
import argparse
import ipaddress
import logging
import os
import socket

from ..cli import add_weights_argument, base_parser
from ..errors import UserError

log = logging.getLogger("vit_ms")


def build_parser() -> argparse.ArgumentParser:
    parser = base_parser(__doc__, config_required=False, prog="python -m vit_ms.serve",
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="checkpoint (runs/<name>/best.ckpt), published weights name "
                                                      "or file, or an exported .mindir/.onnx with its sidecar")
    add_weights_argument(parser)
    parser.add_argument("--class-names", help="text file with one class name a line (default: the recorded ones)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    parser.add_argument("--token", help="require 'Authorization: Bearer TOKEN' on the /v1/ API")
    parser.add_argument("--batch-size", type=int, default=16, help="most images in one model call (default 16)")
    parser.add_argument("--max-wait-ms", type=float, default=5.0,
                        help="how long a batch waits for more images after its first (default 5)")
    parser.add_argument("--max-images", type=int, default=16, help="most images in one request (default 16)")
    parser.add_argument("--max-body-mb", type=float, default=20.0, help="largest request body in MiB (default 20)")
    parser.add_argument("--decode-threads", type=int, default=2, help="threads decoding uploads (default 2)")
    parser.add_argument("--body-timeout-s", type=float, default=30.0,
                        help="seconds a request body may take to arrive; slower ones get 408 and are closed "
                             "(default 30)")
    parser.add_argument("--bodies-in-flight", type=int, default=4,
                        help="request bodies held in memory at once, in units of --max-body-mb (default 4: 80 MiB); "
                             "more uploads wait their turn")
    parser.add_argument("--max-image-pixels", type=int,
                        help="most pixels one upload decodes to (default: 16x the model's input side, squared, "
                             "within data.max_image_pixels; larger JPEGs decode at reduced scale)")
    return parser


def parse_args(argv) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    for flag in ("batch_size", "max_images", "decode_threads", "bodies_in_flight"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    if args.max_wait_ms < 0 or args.max_body_mb <= 0 or args.body_timeout_s <= 0:
        parser.error("--max-wait-ms must be 0 or more, --max-body-mb and --body-timeout-s more than 0")
    if args.max_image_pixels is not None and args.max_image_pixels < 1:
        parser.error(f"--max-image-pixels must be at least 1, got {args.max_image_pixels}")
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be between 0 and 65535, got {args.port}")
    return args


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, bound before the model loads so a taken port fails at once."""
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(info[0], socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(info[4])
        sock.listen(128)
    except OSError as err:
        raise UserError(f"cannot listen on {host}:{port} ({err.strerror or err}); pick a free port with --port "
                        f"(0 lets the system choose) or another --host") from err
    return sock


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    # MindSpore takes seconds to import: loaded once the arguments parse, so --help and usage errors answer at once
    from aiohttp import web
    from .app import Settings, build_app
    from .model import load_served_model
    from .run_info import RunStory
    from .uploads import Limits
    from ..weights.hub import cache_dir_from_env

    sock = bind(args.host, args.port)
    if not is_loopback(args.host) and not args.token:
        log.warning("listening on %s without --token: anyone who can reach this address can use the model",
                    args.host)
    try:
        model = load_served_model(args.ckpt, args.batch_size, args.config, args.overrides, args.weights,
                                  args.class_names, cache_dir=cache_dir_from_env(os.environ))
        seconds = model.warm_up()
    except BaseException:
        sock.close()
        raise
    settings = Settings(Limits(int(args.max_body_mb * 1024 * 1024), args.max_images, args.body_timeout_s,
                               args.bodies_in_flight),
                        args.max_wait_ms, args.token, args.decode_threads, args.max_image_pixels)
    app = build_app(model, settings, RunStory.find(args.ckpt))
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"serving {model.info['architecture']['name']} from {args.ckpt} on http://{shown}:{port}/ "
          f"(batch sizes {model.batch_sizes} compiled in {seconds:.1f} s)", flush=True)
    web.run_app(app, sock=sock, print=None, access_log=None)
    return 0
