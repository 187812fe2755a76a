"""Generated databases for schema-only records catch predictions that only agree on empty tables."""

from t2sql.evaluation import connect_schema, evaluate_predictions, execute
from t2sql.evaluation.fuzz import fuzz_databases, fuzz_verdict

HEAD = "CREATE TABLE head (head_id INTEGER, name VARCHAR, born_state VARCHAR, age INTEGER)"
JOIN = ("CREATE TABLE department (department_id INTEGER, name VARCHAR, budget REAL); "
        "CREATE TABLE management (department_id INTEGER, head_id INTEGER, temporary_acting VARCHAR)")


def test_empty_tables_cannot_tell_but_generated_rows_can():
    gold = "SELECT name FROM head WHERE age > 56"
    wrong = "SELECT name FROM head WHERE age < 56"
    conn = connect_schema(HEAD)
    assert execute(conn, gold).rows == execute(conn, wrong).rows == []  # both empty on the bare schema
    verdict = fuzz_verdict(HEAD, gold, wrong, k=3)
    assert verdict.match is False
    right = fuzz_verdict(HEAD, gold, "SELECT name FROM head WHERE 56 < age", k=3)
    assert right.match is True and right.databases == 3 and right.gold_nonempty >= 1


def test_generated_rows_hold_gold_literals_nulls_and_are_reproducible():
    gold = "SELECT count(*) FROM head WHERE born_state = 'California' AND age >= 40"
    first = [c.execute("SELECT * FROM head").fetchall() for c in fuzz_databases(HEAD, gold, k=3, seed=5)]
    again = [c.execute("SELECT * FROM head").fetchall() for c in fuzz_databases(HEAD, gold, k=3, seed=5)]
    other = [c.execute("SELECT * FROM head").fetchall() for c in fuzz_databases(HEAD, gold, k=3, seed=6)]
    assert first == again and first != other
    for rows in first:
        assert any(r[2] == "California" for r in rows)
        assert any(r[3] in (40, 39, 41) for r in rows)
    assert any(v is None for rows in first for r in rows for v in r)
    # The databases are locked to reads.
    conn = fuzz_databases(HEAD, gold, k=1)[0]
    assert not execute(conn, "DELETE FROM head").ok


def test_gold_always_matches_itself_and_joins_find_partners():
    gold = ("SELECT T1.name FROM department AS T1 JOIN management AS T2 ON T1.department_id = T2.department_id "
            "WHERE T2.temporary_acting = 'Yes'")
    assert fuzz_verdict(JOIN, gold, gold).match is True
    swapped = ("SELECT d.name FROM management AS m JOIN department AS d ON d.department_id = m.department_id "
               "WHERE m.temporary_acting = 'Yes'")
    verdict = fuzz_verdict(JOIN, gold, swapped)
    assert verdict.match is True and verdict.gold_nonempty >= 1
    assert fuzz_verdict(JOIN, gold, gold.replace("'Yes'", "'No'")).match is False


def test_schema_only_records_are_scored_on_generated_databases(tmp_path):
    records = [
        {"id": "a", "question": "q", "context": HEAD, "answer": "SELECT name FROM head WHERE age > 56",
         "db_id": None, "db_path": None, "source": "create_context"},
        {"id": "b", "question": "q", "context": HEAD, "answer": "SELECT name FROM head WHERE age > 56",
         "db_id": None, "db_path": None, "source": "create_context"},
        {"id": "c", "question": "q", "context": HEAD, "answer": "SELECT count(*) FROM head",
         "db_id": None, "db_path": None, "source": "create_context"},
    ]
    preds = ["SELECT name FROM head WHERE age < 56",      # agrees on empty tables only
             "SELECT name FROM head WHERE 56 < age",      # right, though not the same text
             "SELECT count(*) FROM head"]                 # exactly right
    m = evaluate_predictions(records, preds, None, tmp_path)
    assert m["n_schema_only"] == 3 and m["n_with_database"] == 0
    assert m["execution_accuracy"] == m["execution_accuracy_fuzz"] == 2 / 3
    assert m["exact_match"] == 1 / 3
    assert m["fuzz_disagreement"] == 1 / 3
    assert m["fuzz"]["correct_but_not_exact_match"] == 1 and m["fuzz"]["exact_match_but_wrong"] == 0
