"""``cotune keys``: create and inspect participant identities (wallet + HPKE key)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from cotune.cli.output import JsonOption, console, fail, friendly_errors, print_json
from cotune.cli.passphrase import PassphraseEnvOption, read_passphrase
from cotune.common.atomic import write_bytes_atomic
from cotune.common.home import cotune_home
from cotune.crypto.hpke import HpkeSuite
from cotune.crypto.identity import Identity
from cotune.crypto.keystore import load_keystore, read_keystore_info, save_keystore

app = typer.Typer(
    help=(
        "Participant identities: an Ethereum wallet (signs and pays) and an HPKE key "
        "(decrypts what is sealed to you), kept together in one passphrase-encrypted "
        "keystore file with mode 0600."
    ),
    no_args_is_help=True,
)


def default_keys_dir() -> Path:
    """``$COTUNE_HOME/keys``, with ``COTUNE_HOME`` defaulting to ``~/.cotune``."""
    return cotune_home() / "keys"


def resolve_keystore(name_or_path: str, keys_dir: Path | None) -> Path:
    """A keystore path from a bare name (looked up in the keys directory) or a path."""
    candidate = Path(name_or_path).expanduser()
    if candidate.suffix == ".json" or os.sep in name_or_path or candidate.exists():
        return candidate
    return (keys_dir or default_keys_dir()) / f"{name_or_path}.json"


KeysDirOption = typer.Option(
    None, "--keys-dir", help="Directory of named keystores [default: $COTUNE_HOME/keys]."
)


@app.command("new")
def new(
    name: str = typer.Argument("default", help="Keystore name, or a path ending in .json."),
    suite: HpkeSuite = typer.Option(
        HpkeSuite.X25519,
        "--suite",
        help=(
            "HPKE suite. mlkem768-x25519 is the post-quantum hybrid: choose it for data "
            "that must stay secret for decades."
        ),
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing keystore."),
    keys_dir: Path | None = KeysDirOption,
    passphrase_env: str = PassphraseEnvOption,
    as_json: bool = JsonOption,
) -> None:
    """Create a new identity and save it encrypted under a passphrase."""
    path = resolve_keystore(name, keys_dir)
    if path.exists() and not force:
        fail(f"{path} already exists; pass --force to replace it")
    passphrase = read_passphrase(passphrase_env, confirm=True)
    with friendly_errors():
        identity = Identity.generate(suite)
        save_keystore(path, identity, passphrase, overwrite=force)
    if as_json:
        print_json({"keystore": str(path), **identity.public().to_dict()})
        return
    console.print(f"created [bold]{path}[/] (mode 0600)")
    console.print(f"  address     {identity.address}")
    console.print(f"  hpke suite  {suite.value}")


@app.command("show")
def show(
    name: str = typer.Argument("default", help="Keystore name or path."),
    unlock: bool = typer.Option(
        False, "--unlock", help="Also decrypt the keystore to check the passphrase."
    ),
    keys_dir: Path | None = KeysDirOption,
    passphrase_env: str = PassphraseEnvOption,
    as_json: bool = JsonOption,
) -> None:
    """Show a keystore's address, HPKE public key and file permissions."""
    path = resolve_keystore(name, keys_dir)
    with friendly_errors():
        info = read_keystore_info(path)
        if unlock:
            load_keystore(path, read_passphrase(passphrase_env, confirm=False))
    safe = info.file_mode & 0o077 == 0
    if as_json:
        print_json(
            {
                "keystore": str(path),
                "file_mode": f"{info.file_mode:04o}",
                "permissions_ok": safe,
                "unlocked": unlock,
                **info.public.to_dict(),
            }
        )
        return
    console.print(f"keystore        {path}")
    console.print(f"address         {info.public.address}")
    console.print(f"hpke suite      {info.public.hpke_public_key.suite.value}")
    console.print(f"hpke public key {info.public.hpke_public_key.to_hex()}", overflow="fold")
    mode_note = "" if safe else f"  [red]too open: run chmod 600 {path}[/]"
    console.print(f"file mode       {info.file_mode:04o}{mode_note}")
    if unlock:
        console.print("passphrase      [green]ok[/]")


@app.command("export-public")
def export_public(
    name: str = typer.Argument("default", help="Keystore name or path."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Write to this file instead of stdout."
    ),
    keys_dir: Path | None = KeysDirOption,
) -> None:
    """Print the public identity (address + HPKE public key) as JSON, to share with others."""
    path = resolve_keystore(name, keys_dir)
    with friendly_errors():
        public = read_keystore_info(path).public
    if out is None:
        print_json(public.to_dict())
        return
    with friendly_errors():
        write_bytes_atomic(out, (json.dumps(public.to_dict(), indent=2) + "\n").encode())
    console.print(f"wrote {out}")
