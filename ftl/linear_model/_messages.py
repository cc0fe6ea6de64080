"""Message types of the vertical logistic regression protocol (see docs/protocols)."""

from ftl.federation.messages import (
    ALIGNED_POSITIONS,
    PUBLIC_INT,
    PUBLIC_JSON,
    PUBLIC_STR,
    FieldSpec,
    ValueKind,
    register,
)
from ftl.federation.messages import MAX_ROWS as _MAX_ROWS

_PUBLIC = ValueKind.PUBLIC

# Key exchange and session set-up: parameters, public keys, row positions.
OPEN = register(
    "lr.open",
    "Driver opens a host session: public training parameters and the guest's public key.",
    params=PUBLIC_JSON,
    public_keys=PUBLIC_JSON,
    alignment=PUBLIC_STR,
    positions=ALIGNED_POSITIONS,
)
RESUME = register(
    "lr.resume",
    "Driver re-opens a host session to go on with a checkpointed fit (params carry its "
    "fit_id) from iteration boundary `step`; answered like an open (lr.opened).",
    params=PUBLIC_JSON,
    public_keys=PUBLIC_JSON,
    alignment=PUBLIC_STR,
    positions=ALIGNED_POSITIONS,
    step=PUBLIC_INT,
)
OPENED = register(
    "lr.opened",
    "Host's public key and feature count.",
    public_key=PUBLIC_JSON,
    n_features=PUBLIC_INT,
)
PEER_KEYS = register(
    "lr.peer_keys",
    "Public keys of all parties, so each can compute on the others' ciphertexts.",
    public_keys=PUBLIC_JSON,
)
BATCH = register(
    "lr.batch",
    "Which aligned rows (positions inside the training rows) form the next batch.",
    batch=ALIGNED_POSITIONS,
)
CONTRIBUTION = register(
    "lr.contribution",
    "A party's per-sample columns of the residual (rows x pieces), under its own key.",
    owner=PUBLIC_STR,
    values=FieldSpec("encrypted", ValueKind.CIPHERTEXT, ndim=2, per_sample=True, max_len=_MAX_ROWS),
)
# First pass at a host's start (docs/protocols.md §3.6): its weights are zero, so
# its pieces are the public phi_k(0) and the guest alone knows the residual.
ZERO_MARGIN = register(
    "lr.zero_margin",
    "A host's answer to lr.batch while its weights are exactly zero (its start, known "
    "to both; only if the guest's lr.open declared zero_margin_form): no ciphertexts, "
    "its pieces are the public values at margin 0.",
    owner=PUBLIC_STR,
)
RESIDUAL = register(
    "lr.residual",
    "Answer to lr.zero_margin: the guest's whole residual per row (rows x 1, one piece), "
    "under its own key; the host accepts it only while it declared its margin zero.",
    owner=PUBLIC_STR,
    values=FieldSpec("encrypted", ValueKind.CIPHERTEXT, ndim=2, per_sample=True, max_len=_MAX_ROWS),
)
CROSS_TERM = register(
    "lr.cross_term",
    "sum_k (X_P * w_k).T @ [[c_Q,k]] + mask, packed `count` values per slot_bits-bit "
    "slots, under Q's key, for Q to decrypt.",
    owner=PUBLIC_STR,
    requester=PUBLIC_STR,
    values=FieldSpec("encrypted", ValueKind.MASKED, ndim=1, max_len=4_096),
    slot_bits=PUBLIC_INT,
    count=PUBLIC_INT,
)
MASKED_VALUES = register(
    "lr.masked_values",
    "Decrypted but still masked cross term, returned to the party that masked it.",
    requester=PUBLIC_STR,
    values=FieldSpec("bigints", ValueKind.MASKED, ndim=2, max_len=1),
)
UPDATE = register(
    "lr.update",
    "The masked cross terms a host asked for, one row per peer; owners[i] decrypted row i.",
    owners=PUBLIC_JSON,
    values=FieldSpec("bigints", ValueKind.MASKED, ndim=2, max_len=4_096),
)
EPOCH_END = register("lr.epoch_end", "Driver closes an epoch.", epoch=PUBLIC_INT)
WEIGHT_CHANGE = register(
    "lr.weight_change",
    "Squared norms of a host's weight change over the epoch and of its weights (for tol).",
    delta_sq=FieldSpec("array", _PUBLIC, ndim=1, dtypes=("float64",), max_len=2),
)
# optimizer="lbfgs" (docs/protocols.md §3.8): only inner products of each party's own vectors cross.
SLOPE = register(
    "lr.slope",
    "lbfgs: a party's part g_P . d_P of the directional derivative at the trial point "
    "(one scalar, after its gradient step of the pass).",
    slope=FieldSpec("array", _PUBLIC, ndim=1, dtypes=("float64",), max_len=1),
)
ACCEPT = register(
    "lr.accept",
    "lbfgs: the trial point is the new base point; keep its (s, y) pair or clear the memory.",
    keep_pair=PUBLIC_INT,
    clear_memory=PUBLIC_INT,
)
GRAM = register(
    "lr.gram",
    "lbfgs: inner products of a party's own blocks of the L-BFGS basis vectors "
    "(s_i, y_i, g, H y_i, H g; at most 32 x 32 values), and ||s||^2, ||w||^2.",
    gram=FieldSpec("array", _PUBLIC, ndim=2, dtypes=("float64",), max_len=32),
    delta_sq=FieldSpec("array", _PUBLIC, ndim=1, dtypes=("float64",), max_len=2),
)
MOVE = register(
    "lr.move",
    "lbfgs: coefficients of the search direction on the basis, and the step length.",
    coefficients=FieldSpec("array", _PUBLIC, ndim=1, dtypes=("float64",), max_len=32),
    step=FieldSpec("array", _PUBLIC, ndim=1, dtypes=("float64",), max_len=1),
)
LOSS_TERM = register(
    "lr.loss_term",
    "verbose only: the epoch's log-loss terms on the host's ciphertexts, summed over all "
    "rows of the epoch under the host's key and masked, for the host to decrypt.",
    values=FieldSpec("encrypted", ValueKind.MASKED, ndim=1, max_len=1),
    slot_bits=PUBLIC_INT,
    count=PUBLIC_INT,
)
MASKED_LOSS = register(
    "lr.masked_loss",
    "verbose only: the host's decryption of the masked loss total, plus the host's own "
    "loss terms (Taylor-1); the guest learns only the epoch's total training loss.",
    values=FieldSpec("bigints", ValueKind.MASKED, ndim=1, max_len=1),
)
FINISH = register(
    "lr.finish",
    "Training done: keep the weights as a model shard.",
    model_id=PUBLIC_STR,
)
PREDICT_OPEN = register(
    "lr.predict_open",
    "Open a prediction session on a stored model shard for some aligned rows.",
    model_id=PUBLIC_STR,
    public_keys=PUBLIC_JSON,
    alignment=PUBLIC_STR,
    positions=ALIGNED_POSITIONS,
)
MASKED_MARGIN = register(
    "lr.masked_margin",
    "Prediction: [[u_host + r]] under the host's key, r known only to the guest, "
    "`count` values packed in slot_bits-bit slots.",
    values=FieldSpec("encrypted", ValueKind.MASKED, ndim=1, per_sample=True, max_len=_MAX_ROWS),
    slot_bits=PUBLIC_INT,
    count=PUBLIC_INT,
)
MASKED_MARGIN_VALUES = register(
    "lr.masked_margin_values",
    "Prediction: the host's decryption of u_host + r, still masked.",
    values=FieldSpec("bigints", ValueKind.MASKED, ndim=1, per_sample=True, max_len=_MAX_ROWS),
)
