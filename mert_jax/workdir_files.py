"""Every file and folder of a training workdir, named once; every module that reads or writes one
asks here. Paths are relative to the workdir (local or gs://).

  WORKDIR/
    config.json               CONFIG: the run's recorded config (train/recorded_config.py)
    config_changes.jsonl      CONFIG_CHANGES: loop settings changed on a resume, one row each
    lock.json                 LOCK: who holds the workdir, with its heartbeat
    checkpoints/STEP/         CHECKPOINTS: orbax steps, each with STATE, DATA_ITER and META
    checkpoints_set_aside/    SET_ASIDE: steps that failed their checks, moved aside, never deleted
    metrics.jsonl             METRICS: one JSON row per logged step, evaluation and probe
    tb/                       TENSORBOARD: the same rows as TensorBoard events
    curves.png                CURVES: python -m mert_jax.plot's default picture
    data/                     DATA: the embedded default corpus, when data.dir is unset
    bestrq.npz                BESTRQ: the run's frozen BEST-RQ quantizers
    init_from.json            INIT_FROM: where the weights came from (init_from)
    probe_cache/              PROBE_CACHE: the in-training probe's prepared sets (local workdirs)
    probe/results.json        PROBE_RESULTS: a probe run's results, read by the model card
    profile/process_N/        PROFILE: --config.profile_steps traces
"""

CONFIG = "config.json"
CONFIG_CHANGES = "config_changes.jsonl"
LOCK = "lock.json"
CHECKPOINTS = "checkpoints"
# Inside CHECKPOINTS/STEP: orbax's items (the train state, the data position, the meta with the
# fingerprints) and orbax's own per-step metadata file.
STATE, DATA_ITER, META = "state", "data_iter", "meta"
ORBAX_STEP_METADATA = "_CHECKPOINT_METADATA"
SET_ASIDE = "checkpoints_set_aside"
METRICS = "metrics.jsonl"
TENSORBOARD = "tb"
CURVES = "curves.png"
DATA = "data"
BESTRQ = "bestrq.npz"
INIT_FROM = "init_from.json"
PROBE_CACHE = "probe_cache"
PROBE_RESULTS = "probe/results.json"
PROFILE = "profile"
