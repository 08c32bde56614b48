"""A chart repository of charts/rillet, as `make chart` writes it and the e2e tests serve it:
`helm package` with the chart's version and appVersion set to the project's version (so the
package never carries a stale Chart.yaml), then `helm repo index` over every package in the
folder, so earlier versions kept there stay installable."""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import yaml

from testcluster import build

CHART = Path(__file__).resolve().parent / "rillet"


def package(chart: Path, out: Path, version: str, helm: Path) -> Path:
    """The chart's .tgz in `out`, named by helm `<name>-<version>.tgz`."""
    out.mkdir(parents=True, exist_ok=True)
    command = [str(helm), "package", str(chart), "--destination", str(out)]
    subprocess.run([*command, "--version", version, "--app-version", version], check=True)
    name = yaml.safe_load((chart / "Chart.yaml").read_text())["name"]
    return out / f"{name}-{version}.tgz"


def index(out: Path, helm: Path, url: str | None = None) -> Path:
    """index.yaml for every package in `out`. Without `url` the packages' URLs are relative,
    so the folder works wherever it is served; with it they are absolute (for packages
    hosted apart from the index)."""
    subprocess.run(
        [str(helm), "repo", "index", str(out), *(["--url", url] if url else [])], check=True
    )
    return out / "index.yaml"


def build_repository(
    out: Path, version: str, helm: Path, *, chart: Path = CHART, url: str | None = None
) -> Path:
    """Package `chart` as `version` into `out` and index the folder; the package's path."""
    packaged = package(chart, out, version, helm)
    index(out, helm, url)
    return packaged


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--version", required=True, help="the chart's version and appVersion")
    parser.add_argument("--out", type=Path, required=True, help="the repository's folder")
    parser.add_argument("--url", default="", help="the URL it is served at; empty: relative")
    parser.add_argument("--helm", type=Path, help="default: the helm `make control-plane` builds")
    args = parser.parse_args(argv)
    helm = args.helm or build() / "helm"
    build_repository(args.out, args.version, helm, url=args.url or None)
    print(f"indexed {args.out / 'index.yaml'}")


if __name__ == "__main__":
    main()
