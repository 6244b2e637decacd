"""Human evaluation of generated text, blinded (study S4).

    peftbench human export RESULTS --out sheet.csv [--per-system 30] [--seed 0]
        -> sheet.csv (for raters: id, title, output, fluency, follows_title, comment),
           sheet.rubric.md (the two scales' rubric), sheet.key.json (id -> system, run, item; keep it
           away from raters)
    peftbench human import sheet.key.json rater1.csv rater2.csv ... --out ratings.json
        -> checks every sheet (line-precise errors), un-blinds, writes the ratings, prints the table
    peftbench human report ratings.json
        -> S4's table: per system and scale the mean and the % of ratings at each level 1..5,
           and inter-rater agreement (quadratic-weighted Cohen's kappa, mean over rater pairs)

A system is a (backbone, method) pair; with several runs (seeds) of one
system the first run is rated. Every system is rated on the same test items,
drawn with the seed (export reloads each run's test data to check that the
systems saw the same items, and shows raters the titles as written); rows
are shuffled and ids are random, so nothing in the sheet tells the systems
apart.
"""

from __future__ import annotations

import csv
import itertools
import json
import random
import statistics
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from peftbench.sdk import (PREDICTIONS_FILE, CommandContext, Components, ConfigError, DataError, PeftbenchError,
                           hookimpl, iter_records, load_splits)

SCALES = {
    "fluency": "Is the article fluent, natural Japanese?",
    "follows_title": "Does the article follow its title (is it about what the title says)?",
}
RUBRIC = """# Rating rubric

Rate each generated article on two scales, 1 to 5 (whole numbers). Judge each row
on its own; the rows come from several systems in random order.

## fluency — {fluency}
5 natural, error-free text; 4 minor slips; 3 understandable with clear errors;
2 hard to follow, many errors; 1 not readable as Japanese text.

## follows_title — {follows_title}
5 entirely about the title's topic and consistent with it; 4 mostly; 3 partly
related; 2 barely related; 1 unrelated to the title or contradicting it.
""".format(**SCALES)
SHEET_COLUMNS = ["id", "title", "output", *SCALES, "comment"]


def _generated_runs(results: Path) -> dict[str, tuple[dict, dict]]:
    """system -> (record, test predictions) of the first successful run that generated text."""
    systems: dict[str, tuple[dict, dict]] = {}
    for path, record in sorted(iter_records(results), key=lambda item: item[1].get("run_id", "")):
        if record.get("status") != "success":
            continue
        predictions_path = Path(path).parent / PREDICTIONS_FILE
        if not predictions_path.exists():
            continue
        test = json.loads(predictions_path.read_text(encoding="utf-8")).get("test", {})
        if not test.get("predictions") or not isinstance(test["predictions"][0], dict) or \
                "output" not in test["predictions"][0]:
            continue
        system = f"{record['backbone']['name']} / {record['method']['name']}"
        systems.setdefault(system, (record, test))
    return systems


def _test_titles(record: dict, components: Components) -> list[str]:
    """The run's test split, as titles written in the data (not as a tokenizer decodes them)."""
    task = components.tasks.get(record["task"]["name"])
    saved = {k: tuple(v) if isinstance(v, list) else v for k, v in record["config"]["task_config"].items()}
    return [example["title"] for example in load_splits(task, task.Config(**saved)).test]


def export_sheet(results: Path, out: Path, per_system: int, seed: int, components: Components) -> dict[str, Any]:
    systems = _generated_runs(results)
    if not systems:
        raise DataError(f"no successful generation runs with saved test outputs under {results}",
                        "run a generation task (e.g. livedoor-title2article) first")
    # Outputs are in test-split order: systems are comparable item by item when their test splits agree.
    try:
        split_titles = {s: _test_titles(record, components) for s, (record, _) in systems.items()}
    except PeftbenchError as exc:
        raise DataError(f"cannot reload the runs' test data to line their outputs up ({exc})",
                        "make the data available where the runs found it (their data_dir)") from None
    titles = next(iter(split_titles.values()))
    differing = [s for s, t in split_titles.items() if t != titles] + \
        [s for s, (_, test) in systems.items() if len(test["predictions"]) != len(titles)]
    if differing:
        raise DataError(f"the systems were tested on different items ({', '.join(sorted(set(differing)))} differ "
                        f"from {next(iter(systems))})", "rate runs that used the same data and split settings")
    count = len(titles)
    if per_system > count:
        raise ConfigError(f"--per-system {per_system} is more than the {count} test items")
    rng = random.Random(seed)
    items = sorted(rng.sample(range(count), per_system))
    rows, key = [], {}
    for system, (record, test) in systems.items():
        for item in items:
            blind = f"{rng.getrandbits(40):010x}"
            while blind in key:
                blind = f"{rng.getrandbits(40):010x}"
            prediction = test["predictions"][item]
            key[blind] = {"system": system, "run_id": record["run_id"], "item": item}
            rows.append({"id": blind, "title": titles[item], "output": prediction["output"]})
    rng.shuffle(rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=SHEET_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, **{scale: "" for scale in SCALES}, "comment": ""})
    out.with_suffix(".rubric.md").write_text(RUBRIC, encoding="utf-8")
    key_path = out.with_suffix(".key.json")
    key_path.write_text(json.dumps({"scales": SCALES, "seed": seed, "items": items, "systems": sorted(systems),
                                    "rows": key}, indent=1, ensure_ascii=False), encoding="utf-8")
    return {"rows": len(rows), "systems": sorted(systems), "key": str(key_path)}


def read_sheet(path: Path, key: dict[str, Any]) -> list[dict[str, Any]]:
    """One rater's ratings, checked: every id known and present once, every value a whole number 1-5."""
    rater = path.stem
    ratings, seen = [], set()
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing_columns = [c for c in ("id", *SCALES) if c not in (reader.fieldnames or [])]
        if missing_columns:
            raise DataError(f"{path}:1: missing column(s) {', '.join(missing_columns)}",
                            f"the sheet's header must be {','.join(SHEET_COLUMNS)}")
        for row in reader:
            line = reader.line_num
            blind = (row.get("id") or "").strip()
            if blind not in key["rows"]:
                raise DataError(f"{path}:{line}: unknown id {blind!r}", "use the sheet exported with this key")
            if blind in seen:
                raise DataError(f"{path}:{line}: id {blind} is rated twice", "keep one row per id")
            seen.add(blind)
            values = {}
            for scale in SCALES:
                raw = (row.get(scale) or "").strip()
                if raw not in {"1", "2", "3", "4", "5"}:
                    raise DataError(f"{path}:{line}: {scale} is {raw!r}, not a whole number 1-5",
                                    "fill every rating with 1, 2, 3, 4 or 5")
                values[scale] = int(raw)
            ratings.append({"rater": rater, "id": blind, **key["rows"][blind], **values})
    absent = sorted(set(key["rows"]) - seen)
    if absent:
        raise DataError(f"{path}: {len(absent)} row(s) missing (ids {', '.join(absent[:3])}"
                        f"{', ...' if len(absent) > 3 else ''})", "rate every row of the exported sheet")
    return ratings


def summary(ratings: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """S4's rows (system, scale, mean, % at 1..5 over all ratings) and inter-rater agreement."""
    rows = []
    for system in sorted({r["system"] for r in ratings}):
        mine = [r for r in ratings if r["system"] == system]
        for scale in SCALES:
            values = [r[scale] for r in mine]
            rows.append({"system": system, "scale": scale, "ratings": len(values), "mean": statistics.fmean(values),
                         **{str(level): 100 * values.count(level) / len(values) for level in range(1, 6)}})
    raters = sorted({r["rater"] for r in ratings})
    agreement: dict[str, Any] = {"raters": len(raters)}
    if len(raters) >= 2:
        from sklearn.metrics import cohen_kappa_score

        by_rater = {rater: {r["id"]: r for r in ratings if r["rater"] == rater} for rater in raters}
        for scale in SCALES:
            kappas, exact = [], []
            for a, b in itertools.combinations(raters, 2):
                ids = sorted(by_rater[a].keys() & by_rater[b].keys())
                x = [by_rater[a][i][scale] for i in ids]
                y = [by_rater[b][i][scale] for i in ids]
                kappas.append(cohen_kappa_score(x, y, weights="quadratic", labels=[1, 2, 3, 4, 5]))
                exact.append(sum(p == q for p, q in zip(x, y)) / len(ids))
            agreement[scale] = {"quadratic_weighted_kappa": statistics.fmean(kappas),
                                "exact_agreement": statistics.fmean(exact), "pairs": len(kappas)}
    return rows, agreement


def markdown(rows: list[dict[str, Any]], agreement: dict[str, Any]) -> str:
    lines = ["| model | scale | mean | 1 | 2 | 3 | 4 | 5 |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        levels = " | ".join(f"{row[str(level)]:.1f}%" for level in range(1, 6))
        lines.append(f"| {row['system']} | {row['scale']} | {row['mean']:.2f} | {levels} |")
    lines.append("")
    ratings = rows[0]["ratings"] if rows else 0
    lines.append(f"_{ratings} ratings per system and scale from {agreement['raters']} rater(s); % of ratings at each "
                 "level_  ")
    for scale in SCALES:
        if scale in agreement:
            a = agreement[scale]
            lines.append(f"_agreement on {scale}: quadratic-weighted kappa {a['quadratic_weighted_kappa']:.3f}, "
                         f"exact {100 * a['exact_agreement']:.1f}% (mean over {a['pairs']} rater pair(s))_  ")
    if agreement["raters"] < 2:
        lines.append("_one rater: no agreement can be measured_")
    return "\n".join(lines)


@hookimpl
def register_commands(app: typer.Typer, context: CommandContext) -> None:
    human_app = typer.Typer(no_args_is_help=True, help="Blinded human rating of generated text (S4's scales).")

    @human_app.command("export")
    def export_command(
        results: Annotated[Path, typer.Argument(help="folder of run records")],
        out: Annotated[Path, typer.Option(help="the rating sheet to write (CSV)")],
        per_system: Annotated[int, typer.Option(help="test items rated per system (S4: 30)")] = 30,
        seed: Annotated[int, typer.Option(help="draws the items, the ids and the row order")] = 0,
    ) -> None:
        """Write a blinded, shuffled rating sheet, its rubric and the key that un-blinds it."""
        made = export_sheet(results, out, per_system, seed, context.components)
        typer.echo(f"wrote {out} ({made['rows']} rows: {len(made['systems'])} systems x {per_system} items), "
                   f"{out.with_suffix('.rubric.md')}; key {made['key']} (do not give it to raters)")

    @human_app.command("import")
    def import_command(
        key: Annotated[Path, typer.Argument(help="the .key.json written by export", exists=True, dir_okay=False)],
        sheets: Annotated[list[Path], typer.Argument(help="filled sheets, one per rater (rater = file name)",
                                                     exists=True, dir_okay=False)],
        out: Annotated[Optional[Path], typer.Option(help="ratings JSON to write")] = None,
    ) -> None:
        """Check and un-blind filled sheets; print S4's table."""
        try:
            key_data = json.loads(key.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"cannot read key {key} ({exc})", "pass the .key.json written by export") from None
        ratings = [rating for sheet in sheets for rating in read_sheet(sheet, key_data)]
        target = out or key.with_name(key.name.replace(".key.json", ".ratings.json"))
        target.write_text(json.dumps(ratings, indent=1, ensure_ascii=False), encoding="utf-8")
        typer.echo(markdown(*summary(ratings)))
        typer.echo(f"\nratings written to {target}")

    @human_app.command("report")
    def report_command(ratings: Annotated[Path, typer.Argument(help="ratings JSON written by import", exists=True,
                                                               dir_okay=False)]) -> None:
        """S4's table from imported ratings."""
        try:
            loaded = json.loads(ratings.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"{ratings} is not a ratings file ({exc})", "pass the JSON written by `human import`") \
                from None
        typer.echo(markdown(*summary(loaded)))

    app.add_typer(human_app, name="human")
