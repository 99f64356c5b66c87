"""Database URLs and engines, one way for every command: SQLite (a file, the embedded default
that needs no server) or PostgreSQL (several processes or machines), through SQLAlchemy.

`postgresql://user:pass@host/db` is taken to mean psycopg 3 (`postgresql+psycopg://`), the
driver installed with mccscan; a URL that names another driver keeps it.
"""

from __future__ import annotations

from pathlib import Path

from mccscan.errors import InputError

SCHEMES = ("sqlite", "postgresql")


def sqlalchemy_url(url: str) -> str:
    """The SQLAlchemy URL for a user's database URL; a plain path is an SQLite file."""
    if "://" not in url:
        if "@" in url or url.split(":")[0].split("/")[0].lower() in ("postgresql", "postgres", "sqlite"):
            raise InputError(f"database URL {redacted(url.replace('//', '://', 1))}: malformed; "
                             "use sqlite:///PATH or postgresql://user:pass@host/db")
        return f"sqlite:///{Path(url).resolve()}"
    scheme = url.split("://", 1)[0]
    if scheme.split("+")[0] not in SCHEMES:
        raise InputError(f"database URL {redacted(url)}: use sqlite:///PATH or postgresql://user:pass@host/db")
    if scheme == "postgresql":
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def redacted(url: str) -> str:
    """The URL without its password, for messages and logs."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    return f"{scheme}://{credentials.split(':')[0]}:***@{host}" if ":" in credentials else url


def create_engine(url: str):
    """An SQLAlchemy engine for `url`; a missing driver is a clear error."""
    import sqlalchemy

    try:
        return sqlalchemy.create_engine(sqlalchemy_url(url), pool_pre_ping=True)
    except ModuleNotFoundError as exc:
        raise InputError(f"database URL {redacted(url)} needs the {exc.name} driver (pip install "
                         f"'psycopg[binary]' for PostgreSQL)") from exc
