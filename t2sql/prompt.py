"""How a record becomes model input and target, and how model output becomes SQL.

Training and every inference backend go through these functions with the same
:class:`PromptOptions`, which are saved beside every exported model (``t2sql_prompt.json``), so a
model is always served with the input format it was trained on.

The default options give the plain format, ``question: ... schema: CREATE TABLE ...`` with the
gold SQL as target. ``schema_format: compact`` with ``placeholders`` turns on the format of
:mod:`t2sql.linking`: numbered tables and columns, link marks, and targets that point at schema
items by number, mapped back to real names by :func:`postprocess`.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from t2sql.model_dir import PROMPT_FILE

_WS = re.compile(r"\s+")
log = logging.getLogger(__name__)


class PromptOptions(BaseModel):
    """Input/output format options (the ``prompt:`` section of the pipeline config)."""

    model_config = ConfigDict(extra="forbid")

    schema_format: Literal["sql", "compact"] = Field(
        default="sql",
        description="sql: the CREATE TABLE context as given; compact: 't1 singer : c1 name text , ...' "
        "(see t2sql.linking).")
    placeholders: bool = Field(
        default=False,
        description="Number tables t1.. and columns c1..; the target uses the numbers and postprocess maps "
        "them back. Needs schema_format compact.")
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
        "postprocess restores them. Needs placeholders.")
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
        "tables read are joined (t2sql.linking.rewrite_tables). Needs placeholders.")
    value_pointers: bool = Field(
        default=False,
        description="Number the question's words (w1 How w2 many ...); the target writes a value that is a run "
        "of them as its first and last word numbers, postprocess puts the words back. Needs placeholders.")
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
    def _consistent(self) -> "PromptOptions":
        if self.placeholders and self.schema_format != "compact":
            raise ValueError("placeholders needs schema_format: compact")
        if self.infer_joins and not self.placeholders:
            raise ValueError("infer_joins needs placeholders: true")
        if self.value_pointers and not self.placeholders:
            raise ValueError("value_pointers needs placeholders: true")
        if self.question_links and not self.value_pointers:
            raise ValueError("question_links needs value_pointers: true")
        if self.linked_tables_only and not (self.link_marks and self.schema_format == "compact"):
            raise ValueError("linked_tables_only needs schema_format: compact and link_marks: true")
        if self.fix_tables and not self.placeholders:
            raise ValueError("fix_tables needs placeholders: true")
        if self.linked_columns_only and not (self.link_marks and self.placeholders):
            raise ValueError("linked_columns_only needs placeholders: true and link_marks: true")
        if self.question_values and not self.link_marks:
            raise ValueError("question_values needs link_marks: true")
        if self.key_columns and not self.linked_columns_only:
            raise ValueError("key_columns needs linked_columns_only: true")
        return self

    def extra_tokens(self) -> list[str]:
        """Strings a tokenizer should keep as single tokens for this format (empty for the plain one)."""
        from t2sql.linking import placeholder_tokens

        if self.schema_format != "compact":
            return []
        return placeholder_tokens() if self.placeholders or self.link_marks else []


def question_context(question: str, context: str, db_path: str | os.PathLike[str] | None,
                     opts: PromptOptions | None) -> str:
    """The context the model reads for ``question``: with ``opts.question_values``, the values of
    ``db_path`` the question names are written into it (:func:`t2sql.data.values.with_question_values`)."""
    if opts is None or not opts.question_values or not db_path:
        return context
    from t2sql.data.values import with_question_values

    return with_question_values(question, context, db_path)


def _layout(question: str, context: str, opts: PromptOptions):
    from t2sql.linking import layout

    return layout(question, context, placeholders=opts.placeholders, link_marks=opts.link_marks,
                  shuffle_tables=opts.shuffle_tables, column_types=opts.column_types,
                  sample_values=opts.sample_values, linked_only=opts.linked_tables_only,
                  linked_columns_only=opts.linked_columns_only, expand_names=opts.expand_names,
                  key_columns=opts.key_columns, rank_tables=opts.rank_tables)


def build_source(question: str, context: str, opts: PromptOptions | None = None) -> str:
    """Model input for one question over a schema given as CREATE TABLE statements.

    Args:
        question: the question.
        context: CREATE TABLE statements (``"; "``-joined, optionally with sample-value comments).
        opts: format options; None for the plain format.

    Returns:
        ``question: ... schema: ...`` (plain) or ``question: ... | t1 ... : c1 ... , ...`` (compact).
    """
    question = _WS.sub(" ", question).strip()
    context = _WS.sub(" ", context).strip()
    if opts is None or opts.schema_format == "sql":
        return f"question: {question} schema: {context}"
    shown_q = question.lower() if opts.lowercase_question else question
    lay = _layout(question, context, opts)
    if opts.value_pointers:
        from t2sql.linking import mark_question, question_links

        shown_q = mark_question(shown_q, question_links(question, lay) if opts.question_links and lay.text else None)
    elif opts.placeholders:
        from t2sql.linking import space_openers

        shown_q = space_openers(shown_q)
    if not lay.text:
        return f"question: {shown_q} schema: {context}"
    return f"question: {shown_q} | {lay.text}"


def build_sources(pairs: Sequence[tuple[str, str]], opts: PromptOptions | None = None) -> list[str]:
    """:func:`build_source` for (question, context) pairs."""
    return [build_source(q, c, opts) for q, c in pairs]


def build_target(answer: str, question: str, context: str, opts: PromptOptions | None = None) -> str:
    """Training target for a gold SQL answer.

    With placeholders, the answer is rewritten by :func:`t2sql.linking.to_placeholder_sql`; a query
    that cannot be rewritten (unknown column, a common table expression) is kept as written.
    """
    answer = _WS.sub(" ", answer).strip()
    if opts is None or not opts.placeholders:
        return answer
    question = _WS.sub(" ", question).strip()
    context = _WS.sub(" ", context).strip()
    lay = _layout(question, context, opts)
    if not lay.text:
        return answer
    target = placeholder_target(answer, question, context, opts, lay)
    return answer if target is None else target


def placeholder_target(answer: str, question: str, context: str, opts: PromptOptions, lay=None) -> str | None:
    """The placeholder target of ``answer``, or None when it cannot be written with the shown schema."""
    from t2sql.linking import TargetError, to_placeholder_sql

    answer = _WS.sub(" ", answer).strip()
    question = _WS.sub(" ", question).strip()
    if lay is None:
        lay = _layout(question, _WS.sub(" ", context).strip(), opts)
    try:
        return to_placeholder_sql(answer, lay, infer_joins=opts.infer_joins,
                                  question=question if opts.value_pointers else None)
    except TargetError as exc:
        log.debug("no placeholder target (%s): %s", exc, answer)
        return None


def postprocess(text: str, question: str = "", context: str = "", opts: PromptOptions | None = None) -> str:
    """Turn generated text into SQL.

    Always: whitespace collapsed, a trailing semicolon dropped. With placeholders: numbers mapped
    back to the real names of ``context``, ``ON`` conditions inferred, values snapped (see
    :func:`t2sql.linking.restore_sql`). Never raises: on any failure the cleaned text is returned.
    """
    text = _WS.sub(" ", text).strip().rstrip(";").strip()
    if opts is None:
        return text
    if opts.repair:
        from t2sql.linking import repair_sql

        text = repair_sql(text)
    question = _WS.sub(" ", question).strip()
    context = _WS.sub(" ", context).strip()
    try:
        if opts.placeholders:
            from t2sql.linking import restore_sql

            lay = _layout(question, context, opts)
            if lay.text:
                return restore_sql(text, lay, question, infer_joins=opts.infer_joins, snap_values=opts.snap_values,
                                   value_pointers=opts.value_pointers, fix_tables=opts.fix_tables)
        if opts.snap_values:
            from t2sql.linking import snap_literals

            return snap_literals(text, question, _layout(question, context, opts) if opts.schema_format == "compact"
                                 else None)
    except Exception as exc:  # noqa: BLE001 - a model's output must never crash serving
        log.debug("postprocess fell back to the raw text (%s: %s)", type(exc).__name__, exc)
    return text


def save_prompt_options(opts: PromptOptions | None, model_dir: str | os.PathLike[str]) -> None:
    """Write the options beside a model (``t2sql_prompt.json``)."""
    (Path(model_dir) / PROMPT_FILE).write_text(json.dumps((opts or PromptOptions()).model_dump(mode="json")))


def load_prompt_options(model_dir: str | os.PathLike[str]) -> PromptOptions:
    """The options a model was trained with (defaults for models without the file)."""
    path = Path(model_dir) / PROMPT_FILE
    if path.is_file():
        return PromptOptions.model_validate(json.loads(path.read_text()))
    return PromptOptions()
