"""Message types of the federated transfer protocol (see docs/transfer.md)."""

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
_MAX_CTS = 1_000_000

OPEN = register(
    "ftl.open",
    "Source opens a target session: public training parameters, the source's public "
    "key and the aligned positions of the overlap rows used for training.",
    params=PUBLIC_JSON,
    public_key=PUBLIC_JSON,
    alignment=PUBLIC_STR,
    positions=ALIGNED_POSITIONS,
)
RESUME = register(
    "ftl.resume",
    "Source re-opens a target session to go on with a checkpointed fit (params carry its "
    "fit_id) from epoch boundary `step`; answered like an open (ftl.opened).",
    params=PUBLIC_JSON,
    public_key=PUBLIC_JSON,
    alignment=PUBLIC_STR,
    positions=ALIGNED_POSITIONS,
    step=PUBLIC_INT,
)
OPENED = register(
    "ftl.opened",
    "Target's public key and the width of its output layer's input (hidden units + 1).",
    public_key=PUBLIC_JSON,
    n_inputs=PUBLIC_INT,
)
SOURCE_TERMS = register(
    "ftl.source_terms",
    "One batch: which overlap rows, the source's per-row vectors a_i = P'beta_i + "
    "2 gamma u_S,i and the columns of M = P'QP, packed row-wise under the source's key.",
    batch=ALIGNED_POSITIONS,
    rows=FieldSpec("encrypted", ValueKind.CIPHERTEXT, ndim=2, per_sample=True, max_len=_MAX_ROWS),
    matrix=FieldSpec("encrypted", ValueKind.CIPHERTEXT, ndim=2, max_len=4_096),
)
TARGET_TERMS = register(
    "ftl.target_terms",
    "The target's representations u_T,i and their Gram matrix U_T'U_T / n, packed under the "
    "target's key, and the target's masked gradient under the source's key "
    "(`count` slots of `slot_bits` bits), for the source to decrypt.",
    rows=FieldSpec("encrypted", ValueKind.CIPHERTEXT, ndim=2, per_sample=True, max_len=_MAX_ROWS),
    matrix=FieldSpec("encrypted", ValueKind.CIPHERTEXT, ndim=2, max_len=4_096),
    gradient=FieldSpec("encrypted", ValueKind.MASKED, max_len=_MAX_CTS),
    slot_bits=PUBLIC_INT,
)
EXCHANGE = register(
    "ftl.exchange",
    "The source's decryption of the target's masked gradient (still masked) and the "
    "source's own masked gradient under the target's key, for the target to decrypt.",
    decrypted=FieldSpec("bigints", ValueKind.MASKED, max_len=_MAX_CTS * 64),
    gradient=FieldSpec("encrypted", ValueKind.MASKED, max_len=_MAX_CTS),
    slot_bits=PUBLIC_INT,
)
DECRYPTED = register(
    "ftl.decrypted",
    "The target's decryption of the source's masked gradient (still masked).",
    decrypted=FieldSpec("bigints", ValueKind.MASKED, max_len=_MAX_CTS * 64),
)
EPOCH_END = register("ftl.epoch_end", "Source closes an epoch.", epoch=PUBLIC_INT)
WEIGHT_CHANGE = register(
    "ftl.weight_change",
    "Squared norms of the target's weight change over the epoch and of its weights (for tol).",
    delta_sq=FieldSpec("array", _PUBLIC, ndim=1, dtypes=("float64",), max_len=2),
)
FINISH = register(
    "ftl.finish",
    "Training done: the target keeps its network as a model shard.",
    model_id=PUBLIC_STR,
)
PREDICT_OPEN = register(
    "ftl.predict_open",
    "Score target rows with a stored shard: the rows (aligned positions, or the "
    "target's own ids) and the source's prototypes P, packed under the source's key.",
    model_id=PUBLIC_STR,
    alignment=PUBLIC_STR,
    positions=ALIGNED_POSITIONS,
    ids=PUBLIC_JSON,
    params=PUBLIC_JSON,
    public_key=PUBLIC_JSON,
    prototypes=FieldSpec("encrypted", ValueKind.CIPHERTEXT, ndim=2, max_len=4_096),
)
SCORES = register(
    "ftl.scores",
    "[[P u_T,j + offset]] for every requested row under the source's key (the source's "
    "own result): `count` rows in all, floor(slots / K') rows per ciphertext, every slot "
    "shifted by a public offset.",
    values=FieldSpec("encrypted", ValueKind.CIPHERTEXT, per_sample=True, max_len=_MAX_ROWS),
    slot_bits=PUBLIC_INT,
    count=PUBLIC_INT,
)
