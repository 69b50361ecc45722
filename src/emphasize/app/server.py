"""Serve the app: bind to 127.0.0.1 unless told otherwise, no public share link, an upload size limit, one job at a
time (the others wait in the queue)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from emphasize.app.handlers import AppLimits, ModelSession

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


@dataclass(frozen=True)
class ServerConfig:
    """Where and how the app is served."""

    host: str = "127.0.0.1"  # the interface to bind; anything but loopback exposes the app to the network
    port: int = 7860  # TCP port (Gradio's usual one); 0 is not accepted, pick a free port yourself
    max_file_size: int = AppLimits().max_upload_bytes  # bytes of one upload, refused by the server above that
    queue_size: int = 16  # jobs waiting at most; more are refused until the queue drains

    def __post_init__(self) -> None:
        if not self.host or any(c.isspace() for c in self.host):
            raise ValueError(f"host {self.host!r} must be a host name or an IP address")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"port {self.port} must be in [1, 65535]")
        if self.max_file_size < 1:
            raise ValueError(f"max_file_size={self.max_file_size} must be >= 1")
        if self.queue_size < 1:
            raise ValueError(f"queue_size={self.queue_size} must be >= 1")

    @property
    def loopback(self) -> bool:
        """The app is reachable from this machine only."""
        if self.host in LOOPBACK_NAMES:
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def launch(session: ModelSession, config: ServerConfig | None = None, *, block: bool = True, quiet: bool = False):
    """Build the page on `session`, queue it (one job at a time) and serve it.

    Args:
        session: the warm model session.
        config: host, port, upload limit; `ServerConfig()` when None.
        block: serve until interrupted (the CLI); False returns at once with the server running (tests).
        quiet: no start-up banner from Gradio.

    Returns:
        `(demo, url)`: the running Blocks (`demo.close()` stops it) and its local URL.
    """
    from emphasize.app.ui import CSS, build_app

    config = config or ServerConfig()
    demo = build_app(session)
    demo.queue(default_concurrency_limit=1, max_size=config.queue_size)
    _, url, _ = demo.launch(
        server_name=config.host,
        server_port=config.port,
        share=False,
        max_file_size=config.max_file_size,
        allowed_paths=[str(session.workdir)],
        prevent_thread_lock=not block,
        quiet=quiet,
        ssr_mode=False,
        mcp_server=False,
        footer_links=[],
        css=CSS,
    )
    return demo, url
