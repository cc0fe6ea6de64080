"""The report's automatic checks, and the key size they test."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ftl.crypto.keys import MIN_SECURE_KEY_SIZE
from ftl.reporting._analysis import Analysis

__all__ = ["checks", "key_info"]

_CHECK_OWNER = "No ciphertext sent back to its key owner"
_CHECK_KEY = f"Key size ≥ {MIN_SECURE_KEY_SIZE} bits"


def code_list(names: Iterable[str]) -> str:
    """Names as a comma-separated list of inline code."""
    return ", ".join(f"`{n}`" for n in names)


def key_info(a: Analysis) -> tuple[str, int | None]:
    """Key-size description and the smallest key size (``None`` when not known).

    The fitted estimator's parameters say it when the report is of an estimator;
    a bare transcript records each ciphertext field's width, from which the
    modulus size follows (``FieldRecord.width``).
    """
    scope = a.framing.key_scope if a.framing is not None else "every party"
    est = a.estimator
    if est is None:
        sizes = sorted(set(a.key_bits.values()))
        if not sizes:
            return "not recorded (a bare transcript holds no key parameters)", None
        moduli = " and ".join(f"{k}-bit" for k in sizes)
        noun = "modulus" if len(sizes) == 1 else "moduli"
        return (
            f"{moduli} Paillier {noun} for {scope}, read from the ciphertexts' width",
            sizes[0],
        )
    encryption = getattr(est, "encryption", "paillier")
    if encryption is None:
        return "none: `encryption=None` (plaintext mode, nothing is encrypted)", None
    key_size = getattr(est, "key_size", None)
    if key_size is None:
        return "not recorded", None
    text = f"{int(key_size)}-bit Paillier modulus for {scope}"
    if getattr(est, "insecure_for_tests", False):
        text += " (`insecure_for_tests=True`)"
    return text, int(key_size)


def checks(a: Analysis, key_size: int | None) -> tuple[list[Sequence[str]], list[str]]:
    """Rows of the checks table, and warning bullets for the failed checks."""
    rows: list[Sequence[str]] = []
    warnings: list[str] = []
    for check in (_plaintext, _per_sample, _key_owner):
        check(a, rows, warnings)
    _key_size(key_size, rows, warnings)
    return rows, warnings


def _plaintext(a: Analysis, rows: list, warnings: list) -> None:
    if not a.plaintext_fields:
        rows.append(("No field of kind `plaintext`", "PASS", ""))
        return
    fields = code_list(a.plaintext_fields)
    rows.append(("No field of kind `plaintext`", "FAIL", fields))
    what = "".join(d.disclosure.plaintext_values for d in a.present if a.crossed_in_plaintext(d))
    warnings.append(
        "WARNING: plaintext values crossed party boundaries. This run used "
        f"`encryption=None`: values that a secure run encrypts or masks{what} were sent "
        f"in the clear in {fields}. Never use this mode on real data."
    )


def _per_sample(a: Analysis, rows: list, warnings: list) -> None:
    check = "Per-sample fields are ciphertexts or masked"
    if a.unprotected_fields or a.per_sample_plaintext:
        detail = code_list([*a.unprotected_fields, *a.per_sample_plaintext])
        if a.per_sample_plaintext:
            detail += " (plaintext mode)"
        rows.append((check, "FAIL", detail))
        if a.unprotected_fields:
            warnings.append(
                "WARNING: per-sample fields that are neither ciphertexts nor masked crossed "
                f"party boundaries: {code_list(a.unprotected_fields)}."
            )
        return
    notes = [
        d.disclosure.public_per_sample.check_note
        for d in a.protocols
        if d.disclosure.public_per_sample is not None
        and any(d.owns(name) for name in a.fields_in("ps_public"))
    ]
    rows.append((check, "PASS", "; ".join(notes)))


def _key_owner(a: Analysis, rows: list, warnings: list) -> None:
    owner_types = {t for d in a.protocols for t in d.disclosure.owner_types}
    if not owner_types & a.type_set:
        expected = sorted({t for d in a.listed for t in d.disclosure.owner_types})
        detail = f"no {code_list(expected)}" if expected else ""
        rows.append((_CHECK_OWNER, "n/a", detail or "no message that encrypts its sender's values"))
    elif not a.key_owner:
        rows.append((_CHECK_OWNER, "n/a", "no ciphertexts (plaintext mode)"))
    elif a.to_key_owner:
        rows.append((_CHECK_OWNER, "FAIL", code_list(a.to_key_owner)))
        warnings.append(
            "WARNING: ciphertexts of kind `ciphertext` were sent to the owner of their "
            f"key, who can decrypt them: {code_list(a.to_key_owner)}."
        )
    elif a.returned_by_design:
        reasons = dict.fromkeys(rb.reason for rb in a.returned_by_design.values())
        detail = f"except by design {code_list(a.returned_by_design)}: " + "; ".join(reasons)
        rows.append((_CHECK_OWNER, "PASS", detail))
    else:
        rows.append((_CHECK_OWNER, "PASS", ""))


def _key_size(key_size: int | None, rows: list, warnings: list) -> None:
    if key_size is None:
        rows.append((_CHECK_KEY, "n/a", "not recorded"))
    elif key_size < MIN_SECURE_KEY_SIZE:
        rows.append((_CHECK_KEY, "FAIL", f"{key_size} bits"))
        warnings.append(
            f"WARNING: weak keys. {key_size}-bit Paillier keys are below the "
            f"{MIN_SECURE_KEY_SIZE}-bit minimum and can be factored (test setting only)."
        )
    else:
        rows.append((_CHECK_KEY, "PASS", f"{key_size} bits"))
