"""The linked format: the schema written compactly with numbered tables and columns, link marks where
the question names them, and targets that point at schema items by number (:mod:`t2sql.linking`).

    prompt:
      format: linked
      placeholders: true
      link_marks: true
      value_pointers: true

    question: w1 How w2 many w3 singers ... | t1 singer [P] : c1 singer id , c2 name , c3 country
    SELECT COUNT(*) FROM t1 WHERE c3 = ' w6 '

:func:`decode` maps the numbers back to the real names of the context, infers the join conditions
and snaps values; everything is recomputed from ``(question, context)``.
"""

from __future__ import annotations

import logging
import os
import re

from pydantic import BaseModel, ConfigDict, Field, model_validator

_WS = re.compile(r"\s+")
log = logging.getLogger(__name__)


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    placeholders: bool = Field(
        default=False,
        description="Number tables t1.. and columns c1..; the target uses the numbers and decode maps "
        "them back.")
    link_marks: bool = Field(
        default=False,
        description="Mark schema items named in the question: [E] whole name, [P] a content word, "
        "[V] a sample value of the column.")
    shuffle_tables: bool = Field(
        default=False, description="Order tables by a seed taken from the question, so numbers cannot be memorised.")
    column_types: bool = Field(default=True, description="Show column types in the compact schema.")
    sample_values: int = Field(
        default=0, ge=0,
        description="Sample values shown per column (taken from the context's /* */ comments; values the "
        "question mentions are shown regardless).")
    infer_joins: bool = Field(
        default=False,
        description="Targets omit JOIN ... ON conditions that foreign keys (or shared *_id columns) give back; "
        "decode restores them. Needs placeholders.")
    snap_values: bool = Field(
        default=False, description="Snap string values in the output onto question spans or sample values.")
    lowercase_question: bool = Field(default=False, description="Lower-case the question in the model input.")
    repair: bool = Field(
        default=False,
        description="Drop what a cut-off generation left open (an unterminated value with its comparison, a "
        "trailing WHERE/AND/comma) and close parentheses, so the query can run.")
    fix_tables: bool = Field(
        default=False,
        description="On output, make each SELECT read the tables its columns belong to: a repeated JOIN is "
        "dropped, a table none of whose columns is read is swapped for the one whose columns are, other "
        "tables read are joined, and a table no other read table has a key with is reached through the "
        "tables that link them (t2sql.linking.rewrite_tables). Needs placeholders.")
    value_columns: bool = Field(
        default=False,
        description="On output, compare a string value on the column that stores it: c5 = 'United Kingdom' "
        "becomes c3 = 'United Kingdom' when c3 is the one column whose shown values hold it (the values "
        "question_values writes; t2sql.linking.compare_on_value_columns). Needs placeholders.")
    order_words: bool = Field(
        default=False,
        description="On output, sort in the direction the question's words ask for ('descending', 'reverse "
        "alphabetical' -> DESC; 'ascending', 'alphabetical' -> ASC) when the query has one ORDER BY of one key "
        "(t2sql.linking.order_as_asked). Needs placeholders.")
    value_pointers: bool = Field(
        default=False,
        description="Number the question's words (w1 How w2 many ...); the target writes a value that is a run "
        "of them as its first and last word numbers, decode puts the words back. Needs placeholders.")
    question_links: bool = Field(
        default=False,
        description="Write after a question word the numbers of the tables and columns whose names hold it "
        "(w3 date c8): the model copies a number from beside the word it reads. Needs value_pointers.")
    linked_tables_only: bool = Field(
        default=False,
        description="Show only the tables the question links to (a link mark on the table, one of its "
        "columns or a stored value), all of them when none is linked: shorter inputs train faster. Training "
        "skips examples whose gold query reads a table left out. Needs link_marks.")
    linked_columns_only: bool = Field(
        default=False,
        description="Of the shown tables, show only the columns with a link mark (all of them when none has "
        "one): the schema shrinks to the columns the question names. Training skips examples whose gold query "
        "reads a column left out. Needs placeholders and link_marks.")
    expand_names: bool = Field(
        default=False,
        description="Link schema names through their words written out: a word glued to id is split off "
        "(stuid -> stu id) and common abbreviations are read as words (dept -> department, fname -> first name).")
    key_columns: bool = Field(
        default=False,
        description="With linked_columns_only, also show the columns of each foreign key between two shown "
        "tables, the keys that subqueries and groupings read.")
    rank_tables: bool = Field(
        default=False,
        description="Number first the tables the question names in full ([E]), then those it names in part "
        "([P]), then those linked through a column or a value only: the table a query reads is most often t1.")
    question_values: bool = Field(
        default=False,
        description="Write into the context the values of the question's database that the question names "
        "(t2sql.data.values): 'from the United Kingdom' marks and shows Country = 'United Kingdom'. Needs "
        "link_marks and the SQLite file of each question (db_path); without one the context is used as it is.")

    @model_validator(mode="after")
    def _consistent(self) -> "Config":
        needs = [("infer_joins", "placeholders"), ("value_pointers", "placeholders"),
                 ("question_links", "value_pointers"), ("linked_tables_only", "link_marks"),
                 ("fix_tables", "placeholders"), ("linked_columns_only", "placeholders"),
                 ("value_columns", "placeholders"), ("order_words", "placeholders"),
                 ("linked_columns_only", "link_marks"), ("question_values", "link_marks"),
                 ("key_columns", "linked_columns_only")]
        for option, needed in needs:
            if getattr(self, option) and not getattr(self, needed):
                raise ValueError(f"{option} needs {needed}: true")
        return self


def extra_tokens(config: Config) -> list[str]:
    from t2sql.linking import placeholder_tokens

    return placeholder_tokens() if config.placeholders or config.link_marks else []


def reads_database(config: Config) -> bool:
    return config.question_values


def context_for(question: str, context: str, db_path: str | os.PathLike[str] | None, config: Config) -> str:
    """With ``question_values``, the values of ``db_path`` the question names written into the context
    (:func:`t2sql.data.values.with_question_values`)."""
    if not config.question_values or not db_path:
        return context
    from t2sql.data.values import with_question_values

    return with_question_values(question, context, db_path)


def view(question: str, context: str, config: Config):
    """The numbered, marked view of one (question, context) (:func:`t2sql.linking.layout`)."""
    from t2sql.linking import layout

    return layout(question, context, placeholders=config.placeholders, link_marks=config.link_marks,
                  shuffle_tables=config.shuffle_tables, column_types=config.column_types,
                  sample_values=config.sample_values, linked_only=config.linked_tables_only,
                  linked_columns_only=config.linked_columns_only, expand_names=config.expand_names,
                  key_columns=config.key_columns, rank_tables=config.rank_tables)


def encode_source(question: str, context: str, config: Config) -> str:
    question = _WS.sub(" ", question).strip()
    context = _WS.sub(" ", context).strip()
    shown_q = question.lower() if config.lowercase_question else question
    lay = view(question, context, config)
    if config.value_pointers:
        from t2sql.linking import mark_question, question_links

        links = question_links(question, lay) if config.question_links and lay.text else None
        shown_q = mark_question(shown_q, links)
    elif config.placeholders:
        from t2sql.linking import space_openers

        shown_q = space_openers(shown_q)
    if not lay.text:
        return f"question: {shown_q} schema: {context}"
    return f"question: {shown_q} | {lay.text}"


def placeholder_target(answer: str, question: str, context: str, config: Config, lay=None) -> str | None:
    """The placeholder target of ``answer``, or None when it cannot be written with the shown schema."""
    from t2sql.linking import TargetError, to_placeholder_sql

    answer = _WS.sub(" ", answer).strip()
    question = _WS.sub(" ", question).strip()
    if lay is None:
        lay = view(question, _WS.sub(" ", context).strip(), config)
    try:
        return to_placeholder_sql(answer, lay, infer_joins=config.infer_joins,
                                  question=question if config.value_pointers else None)
    except TargetError as exc:
        log.debug("no placeholder target (%s): %s", exc, answer)
        return None


def encode_target(answer: str, question: str, context: str, config: Config) -> str | None:
    """The target of a gold query: in numbers with placeholders (kept as written when it cannot be
    rewritten), or None when only part of the schema is shown and the query reads what is left out."""
    if config.placeholders and (config.linked_tables_only or config.linked_columns_only):
        return placeholder_target(answer, question, context, config)
    answer = _WS.sub(" ", answer).strip()
    if not config.placeholders:
        return answer
    question = _WS.sub(" ", question).strip()
    context = _WS.sub(" ", context).strip()
    lay = view(question, context, config)
    if not lay.text:
        return answer
    target = placeholder_target(answer, question, context, config, lay)
    return answer if target is None else target


def decode(text: str, question: str, context: str, config: Config) -> str:
    """Generated text to SQL: numbers mapped back to names, joins inferred, values snapped, cut-off
    output repaired (each as configured). Never raises: on any failure the cleaned text is returned."""
    text = _WS.sub(" ", text).strip().rstrip(";").strip()
    if config.repair:
        from t2sql.linking import repair_sql

        text = repair_sql(text)
    question = _WS.sub(" ", question).strip()
    context = _WS.sub(" ", context).strip()
    try:
        if config.placeholders:
            from t2sql.linking import restore_sql

            lay = view(question, context, config)
            if lay.text:
                return restore_sql(text, lay, question, infer_joins=config.infer_joins,
                                   snap_values=config.snap_values, value_pointers=config.value_pointers,
                                   fix_tables=config.fix_tables, value_columns=config.value_columns,
                                   order_words=config.order_words)
        if config.snap_values:
            from t2sql.linking import snap_literals

            return snap_literals(text, question, view(question, context, config))
    except Exception as exc:  # noqa: BLE001 - a model's output must never crash serving
        log.debug("decode fell back to the raw text (%s: %s)", type(exc).__name__, exc)
    return text
