"""`astro data synth` and `astro data warmup`: synthetic problem sets with exact answers.

    astro data synth --family product --n 64 --seed 0 --out problems.jsonl
    astro data synth --family product --n 32 --split heldout --out heldout.jsonl
    astro data warmup --family product --n 64 --seed 0 --copies 4 --noise 0.15 --out warm.jsonl

`synth` writes problems JSONL (id, problem, answer, family metadata), the format every ASTRO
command reads, so a deployment can be smoke-tested without any data; the train and heldout
splits never share a problem. `warmup` writes SFT records (the traces JSONL `astro train sft`
reads) of noisy one-guess solutions of train problems plus the family's multiplication facts,
for warm-starting a small model before it searches.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from astro_cli.errors import fail

if TYPE_CHECKING:
    from astro_core.synthetic import ProductProblem

data_app = typer.Typer(help="Synthetic problem sets with exact answers.", no_args_is_help=True)

Family = Annotated[str, typer.Option(help="Problem family: product (x * b = c).")]
Count = Annotated[int, typer.Option("--n", help="Number of problems (at most the split's size).")]
Seed = Annotated[int, typer.Option(help="Seed of the draw.")]
Out = Annotated[Path, typer.Option(help="JSONL file to write; its folder must exist.")]


def _problems(family: str, n: int, seed: int, split: str) -> list[ProductProblem]:
    from astro_core import synthetic

    if family not in synthetic.FAMILIES:
        fail(f"--family: unknown family {family!r}; choose from {', '.join(synthetic.FAMILIES)}")
    if split not in ("train", "heldout"):
        fail(f"--split: must be train or heldout, not {split!r}")
    if seed < 0:
        fail("--seed: must be >= 0")
    size = sum(1 for p in synthetic.all_problems() if p.split == split)
    if not 1 <= n <= size:
        fail(f"--n: must be between 1 and {size} (the {family} family's {split} split)")
    return synthetic.sample_problems(n, seed, "train" if split == "train" else "heldout")


def _check_out(out: Path) -> None:
    if out.is_dir():
        fail(f"--out: {out} is a folder; name a file in it")
    if not out.parent.is_dir():
        fail(f"--out: folder {out.parent} does not exist")


@data_app.command("synth")
def synth(
    out: Out,
    family: Family = "product",
    n: Count = 64,
    seed: Seed = 0,
    split: Annotated[str, typer.Option(help="train or heldout (disjoint).")] = "train",
) -> None:
    """Write a synthetic problem set (JSONL) with exact answers."""
    from astro_core.synthetic import write_problems

    _check_out(out)
    problems = _problems(family, n, seed, split)
    try:
        write_problems(problems, out)
    except OSError as exc:
        fail(f"--out: cannot write {out}: {exc.strerror}", code=1)
    typer.echo(f"wrote {len(problems)} {family} problems ({split} split, seed {seed}) to {out}")


@data_app.command("warmup")
def warmup(
    out: Out,
    family: Family = "product",
    n: Count = 64,
    seed: Seed = 0,
    copies: Annotated[int, typer.Option(help="Solutions written per problem (and fact).")] = 4,
    noise: Annotated[
        float, typer.Option(help="Share of solutions whose guess is wrong yet stated as right.")
    ] = 0.15,
) -> None:
    """Write warm-start SFT records: noisy solutions of train problems and multiplication facts."""
    import json

    from astro_core.synthetic import warmup_records

    _check_out(out)
    if not 1 <= copies <= 1000:
        fail("--copies: must be between 1 and 1000")
    if not 0.0 <= noise <= 1.0:
        fail("--noise: must be between 0 and 1")
    problems = _problems(family, n, seed, "train")
    records = warmup_records(problems, copies, seed, noise)
    try:
        with out.open("w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record) + "\n")
    except OSError as exc:
        fail(f"--out: cannot write {out}: {exc.strerror}", code=1)
    typer.echo(f"wrote {len(records)} warm-start records ({n} {family} problems) to {out}")


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
