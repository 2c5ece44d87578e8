"""A Debian 12 root file system for the boot's test, and a way to run in it.

The root comes from ``debootstrap`` (minbase, with systemd, as the image has
it: its systemctl is what bootstrap.sh calls), built once and kept as a
tarball in a cache folder, keyed by suite and CPU, so a later run unpacks it
in seconds instead of fetching it again. What the install fetches (apt's
lists and packages, pip's wheels) is kept there too, mounted into the root,
so a warm run downloads little.

Commands run in the root through ``unshare --mount`` and ``chroot``, as root:
/proc and /dev are mounted in a mount namespace of their own, which goes away
with the command, so nothing is left mounted on the host. The network
namespace is the host's: the root reaches Debian's mirror, PyPI and an
emulator on the host's loopback.
"""

import fcntl
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import urllib.request
from pathlib import Path

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"

#: debootstrap's names for the CPUs this may run on.
DEBIAN_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


def cache_folder() -> Path:
    """Where the root's tarball and the package caches are kept between runs."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "taskfleet-tests" / "debian-root"


def arch() -> str:
    return DEBIAN_ARCH.get(platform.machine(), platform.machine())


def mirror_reachable(timeout: float = 10) -> str | None:
    """None when Debian's mirror answers, else why not."""
    try:
        with urllib.request.urlopen(f"{MIRROR}/dists/{SUITE}/Release", timeout=timeout):
            return None
    except OSError as error:
        return f"Debian's mirror ({MIRROR}) cannot be reached: {error}"


def root_tarball() -> Path:
    """The cached tarball of a fresh root; debootstrapped first if missing.
    A lock keeps two test runs from building it at once."""
    folder = cache_folder()
    folder.mkdir(parents=True, exist_ok=True)
    tarball = folder / f"{SUITE}-{arch()}-minbase-systemd.tar.gz"
    with (folder / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not tarball.exists():
            with tempfile.TemporaryDirectory(dir=folder) as scratch:
                root = Path(scratch) / "root"
                subprocess.run(
                    [
                        "debootstrap",
                        "--variant=minbase",
                        "--include=systemd",
                        f"--arch={arch()}",
                        SUITE,
                        str(root),
                        MIRROR,
                    ],
                    check=True,
                    capture_output=True,
                    timeout=1800,
                )
                draft = Path(scratch) / tarball.name
                # The packages debootstrap fetched are not part of the root.
                subprocess.run(
                    [
                        "tar",
                        "-C",
                        str(root),
                        "--exclude=./var/cache/apt/archives/*.deb",
                        "-czf",
                        str(draft),
                        ".",
                    ],
                    check=True,
                )
                draft.replace(tarball)
    return tarball


def unpack_root(target: Path) -> Path:
    """A fresh Debian root at ``target``, ready for ``run_in_root``."""
    target.mkdir(parents=True)
    subprocess.run(["tar", "-C", str(target), "-xzf", str(root_tarball())], check=True)
    # Names resolve as on the host (debootstrap leaves no /etc/hosts).
    shutil.copyfile("/etc/resolv.conf", target / "etc" / "resolv.conf")
    (target / "etc" / "hosts").write_text("127.0.0.1 localhost\n::1 localhost\n")
    # The root trusts the certificate authorities the host added to its own
    # (a network whose TLS passes a proxy of its own): installing Debian's
    # ca-certificates adds them to the root's bundle, which pip is pointed at.
    local_authorities = target / "usr" / "local" / "share" / "ca-certificates"
    local_authorities.mkdir(parents=True, exist_ok=True)
    for authority in Path("/usr/local/share/ca-certificates").glob("*.crt"):
        shutil.copyfile(authority, local_authorities / authority.name)
    return target


#: Folders of the root kept in the cache folder between runs: apt's package
#: lists (an update then fetches only what changed) and archives, pip's wheels.
CACHES = {
    "apt-lists": "var/lib/apt/lists",
    "apt-archives": "var/cache/apt/archives",
    "pip": "root/.cache/pip",
}


def in_root_command(root: Path, command: list[str]) -> list[str]:
    """The command line that runs ``command`` in ``root``, its mounts in a
    namespace of its own; run it with the environment ``command`` is to have
    (nothing on the command line, where ps would show it). The last exec keeps
    the pid, so a signal to the process reaches ``command`` itself."""
    mounts = [f"mount -t proc proc {shlex.quote(str(root / 'proc'))}"]
    mounts.append(f"mount --rbind /dev {shlex.quote(str(root / 'dev'))}")
    for name, inside in CACHES.items():
        source = cache_folder() / name
        (source / "partial" if name.startswith("apt") else source).mkdir(
            parents=True, exist_ok=True
        )
        (root / inside).mkdir(parents=True, exist_ok=True)
        mounts.append(f"mount --bind {shlex.quote(str(source))} {shlex.quote(str(root / inside))}")
    inner = " && ".join([*mounts, "exec chroot " + shlex.join([str(root), *command])])
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", inner]


#: What a command in the root (and the host's tools that enter it) find on their PATH.
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: The root's certificate bundle (the host's authorities in it), for pip.
PIP_CERT = "/etc/ssl/certs/ca-certificates.crt"
