"""The reporting part of benchmarks/robustness.py: the issue's checks and the combined table."""

from __future__ import annotations

from benchmarks.robustness import ARMS, CONFIGS, SUBSETS, checks, markdown, ratio


def _rows(hr: dict[tuple[str, str], float]) -> list[dict]:
    """results.csv-like rows (strings, as csv.DictReader gives them) for every arm and subset."""
    rows = []
    for arm in ARMS:
        for subset in SUBSETS:
            trained = arm not in ("popularity", "oracle")
            rows.append(
                {
                    "arm": arm,
                    "subset": subset,
                    "users": {"all": "100", "warm": "90", "rare": "30", "new": "10"}[subset],
                    "HR@10": str(hr.get((arm, subset), 0.2)),
                    "seconds": "10.0" if trained else "",
                    "oracle_share": "0.5",
                }
            )
    return rows


def test_checks_pass_fail_and_zero_baselines_are_reported_as_such():
    passing = _rows({("full-tiny", "all"): 0.39, ("id", "all"): 0.30, ("full-tiny", "new"): 0.2})
    outcome = checks(passing)
    assert outcome["all_ok"] and outcome["video_over_id_all"] == "1.30x"
    assert not checks(_rows({("full-tiny", "all"): 0.38, ("id", "all"): 0.30}))["all_ok"]
    zero = _rows({("id", "new"): 0.0, ("popularity", "new"): 0.0, ("full-tiny", "new"): 0.1})
    assert checks(zero)["new_ok"] and checks(zero)["video_over_id_new"] == "inf (0 baseline)"
    assert not checks(_rows({("id", "new"): 0.0, ("popularity", "new"): 0.0, ("full-tiny", "new"): 0.0}))[
        "new_ok"
    ]
    assert not checks(_rows({("id", "new"): 0.05, ("popularity", "new"): 0.0, ("full-tiny", "new"): 0.1}))[
        "new_ok"
    ]
    assert ratio(0.0, 0.0) == "- (both 0)"


def test_markdown_has_a_row_per_arm_and_a_check_line_per_configuration():
    name = next(iter(CONFIGS))
    rows = _rows(
        {("full-tiny", "all"): 0.25, ("id", "all"): 0.30, ("id", "new"): 0.0, ("popularity", "new"): 0.0}
    )
    result = {
        "config": name,
        "rows": rows,
        "ceilings": {"category": 0.2, "category x popularity": 0.5, "items_per_category": 15.0},
    }
    table = markdown([result], "tiny", "")
    assert all(f"| {name} | {label} |" in table for label in ("popularity", "`id`", "`full-tiny`", "oracle"))
    assert f"| {name} | 100 (90 / 30 / 10) | 0.83x | **no** |" in table
    assert "yes (both baselines 0) | 40 |" in table  # four trained arms of 10 s each
    assert f"| {name} | 15 | 0.200 | 0.200 | 0.500 | 0.200 |" in table
