"""The one training entrypoint: ``python -m mnist_lib.train`` (also the container's).

The same code trains on a laptop, in a Kubernetes Job, and as one replica of a
distributed TFJob. ``TF_CONFIG`` (see :mod:`mnist_lib.tf_config`) decides how:

- no TF_CONFIG: one process, TensorFlow's default strategy;
- workers only: ``MultiWorkerMirroredStrategy`` - every worker holds a copy of
  the model and gradients are averaged across workers at every step;
- chief + parameter servers + workers: ``ParameterServerStrategy`` - variables
  live on the parameter servers, the chief schedules steps on the workers.

Keras 3's ``model.fit`` does not run under either distributed strategy (keras
issues #20585 and #18624), so training is a short custom loop: one step function
(forward, loss, gradients, update), driven by ``strategy.run``. The loop is the
same in all three cases; only *who calls the step* differs.

The chief (worker 0 without a chief replica) writes TensorBoard scalars,
checkpoints every epoch (a restarted replica resumes from the latest one),
``history.json``, ``result.json`` and the export for TF Serving.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mnist_lib import paths, runs, tf_config
from mnist_lib.config import ConfigError, TrainConfig, config_from_args
from mnist_lib.constants import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_PEER_LOST, EXIT_TERMINATED, PEER_LOST_SAYS
from mnist_lib.data import TRAIN_SIZE, MnistDataError, make_dataset, verify_mnist

STEPS_PER_CALL = 20  # training steps run inside one tf.function call (fewer Python round trips)
EVALUATION_BATCH = 1000  # images per batch when computing validation and test metrics
EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")  # history.json's, and Keras' names


@dataclass
class TrainResult:
    """What a finished run reports. Also written to ``<model-dir>/result.json``."""

    history: list[dict[str, float]]
    test_accuracy: float
    test_loss: float
    export_path: str
    training_seconds: float  # time in the training loop, this run and any run it resumed
    resumed_from_epoch: int
    strategy: str
    workers: int
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def final_val_accuracy(self) -> float:
        return self.history[-1]["val_accuracy"] if self.history else float("nan")


# -- helpers that need no TensorFlow -----------------------------------------

def _in_notebook() -> bool:
    return "ipykernel" in sys.modules


def _describe(config: TrainConfig) -> str:
    layers = f"{config.hidden_layers} hidden layer{'s' if config.hidden_layers != 1 else ''}"
    images = config.train_limit or TRAIN_SIZE
    return (f"{config.architecture.upper()} with {layers} of {config.width}, "
            f"learning rate {config.learning_rate:g}, {config.epochs} epoch(s) of "
            f"{images:,} images, batch {config.batch_size}")


def _prepare_environment(role: tf_config.ClusterRole) -> None:
    """Set what TensorFlow reads from the environment when it starts (so: before it is imported)."""
    if role.strategy != tf_config.SINGLE:
        # TensorFlow's cluster resolver reads TF_CONFIG itself; on an Indexed Job
        # we derived it from JOB_COMPLETION_INDEX, so hand it over.
        os.environ["TF_CONFIG"] = os.environ.get("TF_CONFIG") or tf_config.indexed_job_tf_config(os.environ)
    if role.strategy == tf_config.PARAMETER_SERVER:
        # As TensorFlow's parameter-server guide advises: fail RPCs fast so that the
        # coordinator notices a lost worker and reschedules its steps elsewhere.
        os.environ.setdefault("GRPC_FAIL_FAST", "use_caller")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# -- the training run ---------------------------------------------------------

def train(config: TrainConfig, progress: str | bool = "auto") -> TrainResult | None:
    """Train (or resume) according to ``config`` and TF_CONFIG; return the result on the chief.

    ``progress``: ``"auto"`` shows a progress bar in a notebook and one line per
    epoch elsewhere; ``"bar"``, ``"lines"`` or ``False`` force a style.
    Returns None on replicas that are not the chief.
    """
    config.validate()  # the boundary: from here on, the values are trusted
    role = tf_config.parse_tf_config()
    _prepare_environment(role)
    if not role.runs_training_loop:
        _serve_forever(role)
        return None
    if progress == "auto":
        progress = "bar" if _in_notebook() else "lines"
    return _TrainingRun(config, role, progress).run()


def _serve_forever(role: tf_config.ClusterRole) -> None:
    """Parameter servers (and workers, under PS strategy) only host a TF server.

    The chief sends them variables and steps. They never finish on their own: the
    training operator stops them when the chief succeeds (the local backend too).
    """
    import tensorflow as tf

    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    server = tf.distribute.Server(resolver.cluster_spec(), job_name=resolver.task_type,
                                  task_index=resolver.task_id,
                                  protocol=resolver.rpc_layer or "grpc", start=True)
    print(f"{role.task_type} {role.task_index}: TensorFlow server up at {server.target}; "
          "waiting for the chief to send work (runs until the job is stopped)", flush=True)
    _keep_sigterm_handler()  # (the server may have replaced it, as MultiWorkerMirroredStrategy does)
    # Not server.join(): it blocks in C++, where no Python signal handler ever runs.
    while True:
        time.sleep(3600)


def _keep_sigterm_handler():
    """Put back the SIGTERM handler that was there before TensorFlow's distributed runtime started.

    TensorFlow's coordination service installs its own (for its PreemptionCheckpointHandler, which
    this course does not use); with it, a pod being deleted ignores SIGTERM and trains on until the
    kubelet kills it 30 s later. The command line's handler (:func:`main`) exits at once instead.
    """
    if _sigterm_handler is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _sigterm_handler)


_sigterm_handler: Any = None  # main()'s SIGTERM handler, which _keep_sigterm_handler puts back


class _TrainingRun:
    """One call of :func:`train` on a replica that runs the training loop.

    Read from the top: the strategy, the data, the model and its optimizer, the
    train step, one epoch, evaluation, the epoch's record, and :meth:`run`, the
    loop that ties them together (resume, epochs, export).
    """

    def __init__(self, config: TrainConfig, role: tf_config.ClusterRole, progress: str | bool):
        import keras
        import tensorflow as tf

        self.config, self.role, self.progress = config, role, progress
        self.tf, self.keras = tf, keras
        self.chief = role.is_chief
        self.prefix = "" if role.strategy == tf_config.SINGLE else f"[{role.task_type} {role.task_index}] "
        keras.utils.set_random_seed(config.seed)
        self.strategy = self._make_strategy()
        self.coordinator = None
        if role.strategy == tf_config.PARAMETER_SERVER:
            self.coordinator = tf.distribute.coordinator.ClusterCoordinator(self.strategy)

        with self.strategy.scope():
            # Variables created here are placed by the strategy: mirrored on every
            # worker, or sharded onto the parameter servers.
            self.model = self._make_model()
            self.optimizer = keras.optimizers.Adam(config.learning_rate)
            self.optimizer.build(self.model.trainable_variables)
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        # Per-example losses: averaging over the *global* batch is done explicitly
        # below, so that N workers with N slices of the batch add up to one step.
        self.loss_fn = keras.losses.SparseCategoricalCrossentropy(reduction=None)
        self.predict = tf.function(lambda images: self.model(images, training=False))
        self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer,
                                              epoch=self.epoch)
        # Non-chief workers must save too (saving can involve collective ops), but
        # to a scratch folder that is deleted: only the chief's checkpoint counts.
        self.checkpoint_dir = (config.model_dir if self.chief else
                               config.model_dir / f".scratch-{role.task_type}-{role.task_index}")

    # -- setup: strategy, data, model ---------------------------------------
    def _make_strategy(self):
        tf = self.tf
        if self.role.strategy == tf_config.MULTI_WORKER:
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
        elif self.role.strategy == tf_config.PARAMETER_SERVER:
            resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
            strategy = tf.distribute.ParameterServerStrategy(resolver)
        else:
            return tf.distribute.get_strategy()  # the default: one device, no distribution
        _keep_sigterm_handler()
        return strategy

    def _train_dataset(self, input_context=None):
        cfg = self.config
        ds = make_dataset("train", cfg.batch_size, shuffle=True, seed=cfg.seed,
                          limit=cfg.train_limit or None, repeat=True, drop_remainder=True,
                          data_dir=cfg.data_dir, verify=input_context is None)
        if input_context is not None and input_context.num_input_pipelines > 1:
            ds = ds.unbatch().shard(input_context.num_input_pipelines,
                                    input_context.input_pipeline_id).batch(cfg.batch_size, drop_remainder=True)
        return ds

    def _distributed_iterator(self):
        tf = self.tf
        if self.coordinator is not None:
            # Parameter-server training: each worker builds its own pipeline. This
            # function is shipped to the workers, which read the files themselves.
            def per_worker_dataset():
                return self.strategy.distribute_datasets_from_function(self._train_dataset)

            return iter(self.coordinator.create_per_worker_dataset(per_worker_dataset))
        ds = self._train_dataset()
        options = tf.data.Options()
        # One input file, so split by data, not by file, across workers.
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        return iter(self.strategy.experimental_distribute_dataset(ds.with_options(options)))

    def _make_model(self):
        from mnist_lib.model import build_model  # it imports Keras: not before training starts

        cfg = self.config
        return build_model(cfg.architecture, cfg.hidden_layers, cfg.width)

    # -- the step: the heart of training -------------------------------------
    def _build_train_steps(self):
        tf, model, optimizer = self.tf, self.model, self.optimizer

        def train_step(images, labels):
            with tf.GradientTape() as tape:
                probabilities = model(images, training=True)  # training=True: dropout on
                per_example_loss = self.loss_fn(labels, probabilities)
                loss = tf.nn.compute_average_loss(per_example_loss)
            gradients = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(gradients, model.trainable_variables))
            correct = tf.equal(tf.argmax(probabilities, axis=-1), labels)
            return tf.stack([tf.reduce_sum(per_example_loss),
                             tf.reduce_sum(tf.cast(correct, tf.float32)),
                             tf.cast(tf.size(labels), tf.float32)])

        @tf.function
        def train_steps(iterator, steps):
            """Run ``steps`` steps; return [loss sum, correct, images] seen by this worker.

            Running sums, returned rather than kept in Keras metric variables: under
            parameter-server training those variables live on the parameter servers,
            and workers updating them at the same time lose each other's updates.
            """
            totals = tf.zeros([3])
            for _ in tf.range(steps):
                images, labels = next(iterator)
                per_replica = self.strategy.run(train_step, args=(images, labels))
                totals += tf.add_n(self.strategy.experimental_local_results(per_replica))
            return totals

        return train_steps

    def _train_epoch(self, train_steps, iterator, steps: int, bar) -> tuple[float, float]:
        """Run one epoch of ``steps`` steps; return its (loss, accuracy) over every worker's images."""
        tf = self.tf
        totals, scheduled, done = np.zeros(3), [], 0
        while done < steps:
            n = min(STEPS_PER_CALL, steps - done)
            if self.coordinator is not None:
                # Returns at once: the step runs on whichever worker is free.
                scheduled.append(self.coordinator.schedule(train_steps, args=(iterator, tf.constant(n))))
            else:
                totals += train_steps(iterator, tf.constant(n)).numpy()
            done += n
            if bar is not None and self.coordinator is None:
                bar.update(done, [("loss", totals[0] / totals[2]), ("accuracy", totals[1] / totals[2])])
        if self.coordinator is not None:
            self.coordinator.join()  # wait until every scheduled step has run
            totals = np.sum([remote.fetch() for remote in scheduled], axis=0)
        totals = self._sum_over_workers(totals)
        return float(totals[0] / totals[2]), float(totals[1] / totals[2])

    def _sum_over_workers(self, values):
        """Add up a small vector across all workers (multi-worker only; a collective op).

        Every worker must call this at the same point, or they all wait forever.
        """
        tf = self.tf
        if self.role.strategy != tf_config.MULTI_WORKER:
            return values
        if not hasattr(self, "_all_sum"):
            @tf.function
            def all_sum(x):
                per_replica = self.strategy.run(lambda v: v, args=(x,))
                return self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

            self._all_sum = all_sum
        return self._all_sum(tf.constant(values, tf.float32)).numpy()

    def _evaluate(self, split: str) -> tuple[float, float]:
        """(loss, accuracy) of the current weights on a split, computed on this replica."""
        total_loss, correct, count = 0.0, 0, 0
        for images, labels in make_dataset(split, EVALUATION_BATCH, data_dir=self.config.data_dir):
            probabilities = self.predict(images)
            total_loss += float(self.tf.reduce_sum(self.loss_fn(labels, probabilities)))
            correct += int(np.sum(np.argmax(probabilities, -1) == labels.numpy()))
            count += int(labels.shape[0])
        return total_loss / count, correct / count

    # -- what each epoch leaves: TensorBoard scalars, history.json, a checkpoint
    def _summary_writers(self):
        # The folder and scalar names Keras' TensorBoard callback uses, so the runs
        # look the same in TensorBoard as any Keras tutorial's.
        tf, log_dir = self.tf, self.config.log_dir
        return {"train": tf.summary.create_file_writer(str(log_dir / "train")),
                "validation": tf.summary.create_file_writer(str(log_dir / "validation"))}

    def _write_epoch(self, writers, record: dict[str, float], history: list[dict]) -> None:
        tf = self.tf
        for split, prefix in (("train", ""), ("validation", "val_")):
            with writers[split].as_default(step=record["epoch"]):
                tf.summary.scalar("epoch_loss", record[prefix + "loss"])
                tf.summary.scalar("epoch_accuracy", record[prefix + "accuracy"])
            writers[split].flush()
        paths.write_json(self.config.model_dir / runs.HISTORY_FILE, history)

    def _restore(self) -> tuple[int, str | None]:
        """Resume from the latest checkpoint, if any; return (epochs already done, its path)."""
        latest = self.tf.train.latest_checkpoint(str(self.config.model_dir))
        if latest:
            self.checkpoint.restore(latest)  # everything: weights, optimizer state, epoch
        return int(self.epoch.numpy()), latest

    def _export(self) -> Path:
        """Export a plain (non-distributed) copy of the model: the server needs no cluster."""
        from mnist_lib.model import export_for_serving  # as in _make_model: it imports Keras

        plain = self._make_model()
        plain.set_weights(self.model.get_weights())
        return export_for_serving(plain, self.config.export_dir, self.config.model_name)

    # -- the epoch loop ----------------------------------------------------------
    def run(self) -> TrainResult | None:
        """Resume or start, train the remaining epochs, and (on the chief) test and export."""
        cfg = self.config
        start_epoch, latest = self._restore()
        history = runs.load_history(cfg.model_dir)[:start_epoch] if self.chief else []
        self._say(f"{self.prefix}Training {_describe(cfg)}")
        self._say(f"{self.prefix}Cluster: {self.role.describe()}")
        finished = runs.load_result(cfg.model_dir) if start_epoch >= cfg.epochs else None
        if finished:
            # A replica restarted after the run completed must not train or export again.
            self._say(f"{self.prefix}Already trained: all {cfg.epochs} epochs are in {cfg.model_dir} "
                      "(delete that folder, or use a new run name, to train again).")
            self._barrier()
            return TrainResult(**finished) if self.chief else None
        if start_epoch:
            self._say(f"{self.prefix}Resuming from {latest}: {start_epoch} of {cfg.epochs} epochs done.")

        manager = self.tf.train.CheckpointManager(self.checkpoint, str(self.checkpoint_dir), max_to_keep=2)
        writers = self._summary_writers() if self.chief else None
        steps_per_epoch = max(1, (cfg.train_limit or TRAIN_SIZE) // cfg.batch_size)
        train_steps = self._build_train_steps()
        iterator = self._distributed_iterator()
        training_seconds = history[-1]["cumulative_seconds"] if history else 0.0  # resumed runs count too

        for epoch in range(start_epoch + 1, cfg.epochs + 1):
            started = time.perf_counter()
            bar = self._progress_bar(epoch, steps_per_epoch)
            loss, accuracy = self._train_epoch(train_steps, iterator, steps_per_epoch, bar)
            seconds = time.perf_counter() - started
            training_seconds += seconds
            self.epoch.assign(epoch)
            manager.save(checkpoint_number=epoch)
            if not self.chief:
                self._say(f"{self.prefix}epoch {epoch}/{cfg.epochs} - loss {loss:.4f} - "
                          f"accuracy {accuracy:.4f} - {seconds:.1f}s")
                continue
            val_loss, val_accuracy = self._evaluate("validation")
            record = {"epoch": epoch, "loss": loss, "accuracy": accuracy, "val_loss": val_loss,
                      "val_accuracy": val_accuracy, "seconds": round(seconds, 3),
                      "cumulative_seconds": round(training_seconds, 3),
                      # Where the process that trained this epoch started: a change shows a restart.
                      "resumed_from_epoch": start_epoch}
            history.append(record)
            self._write_epoch(writers, record, history)
            self._show_epoch(bar, record, seconds)

        if not self.chief:
            shutil.rmtree(self.checkpoint_dir, ignore_errors=True)
            self._barrier()
            return None
        return self._finish(history, start_epoch, training_seconds)

    def _finish(self, history: list[dict], start_epoch: int, training_seconds: float) -> TrainResult:
        """The chief's last steps: test accuracy, the export, ``result.json``."""
        test_loss, test_accuracy = self._evaluate("test")
        export_path = self._export()
        result = TrainResult(
            history=history, test_accuracy=test_accuracy, test_loss=test_loss,
            export_path=str(export_path), training_seconds=training_seconds,
            resumed_from_epoch=start_epoch, strategy=self.role.strategy, workers=self.role.num_workers,
            config=self.config.as_dict(),
        )
        paths.write_json(self.config.model_dir / runs.RESULT_FILE, asdict(result))
        self._say(f"{self.prefix}Test accuracy {test_accuracy:.4f} (loss {test_loss:.4f}); "
                  f"model exported to {export_path}")
        self._barrier()
        return result

    def _barrier(self) -> None:
        """All workers meet once more before exiting.

        Without it, a worker that finishes first shuts down while others still
        talk to it, and they linger for tens of seconds reporting unhealthy peers.
        """
        self._sum_over_workers([1.0, 1.0, 1.0])

    # -- what the learner sees ---------------------------------------------------
    def _say(self, line: str) -> None:
        if self.progress:
            print(line, flush=True)

    def _progress_bar(self, epoch: int, steps: int):
        if self.progress != "bar" or not self.chief:
            return None
        print(f"Epoch {epoch}/{self.config.epochs}", flush=True)
        # interval: redraw at most every 2 s, so a notebook's stored output stays small.
        return self.keras.utils.Progbar(steps, interval=2.0, stateful_metrics=list(EPOCH_METRICS))

    def _show_epoch(self, bar, record: dict[str, float], seconds: float) -> None:
        """The chief's end of an epoch: the bar's final state, or one line."""
        if bar is not None:
            bar.update(bar.target, [(name, record[name]) for name in EPOCH_METRICS], finalize=True)
        else:
            metrics = " - ".join(f"{name} {record[name]:.4f}" for name in EPOCH_METRICS)
            self._say(f"{self.prefix}epoch {record['epoch']}/{self.config.epochs} - {metrics} - {seconds:.1f}s")


# -- command line -----------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m mnist_lib.train`` (the container's).

    The exit code tells the cluster whether running again can help (:mod:`mnist_lib.constants`):
    0 done; 2 bad input and 1 a failure, which fail the job at once; 138 (``EXIT_PEER_LOST``) a
    distributed run lost a peer and 143 (``EXIT_TERMINATED``) the pod is being deleted: every replica
    restarts and resumes from the latest epoch checkpoint.
    """
    try:
        config = config_from_args(argv)
        tf_config.parse_tf_config()  # a malformed TF_CONFIG is bad input too
        verify_mnist(config.data_dir)
    except (ConfigError, tf_config.TFConfigError, MnistDataError) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    _exit_on_sigterm(config)
    distributed = tf_config.parse_tf_config().strategy != tf_config.SINGLE
    try:
        train(config, progress="lines")
        code = 0
    except KeyboardInterrupt:
        print("interrupted: the latest checkpoint is kept; run again to resume", file=sys.stderr)
        code = 130
    except Exception as err:  # noqa: BLE001 - the boundary where a learner's run ends
        lost = _lost_peer(err) if distributed else None
        if lost:
            print(f"{PEER_LOST_SAYS} ({lost}): exiting with {EXIT_PEER_LOST} so that every replica "
                  f"restarts; each resumes from the latest checkpoint in {config.model_dir}.",
                  file=sys.stderr, flush=True)
            code = EXIT_PEER_LOST
        else:
            print(f"error: training failed: {type(err).__name__}: {_first_line(err)}\n"
                  f"The latest checkpoint in {config.model_dir} is kept; running the same "
                  "command again resumes from it.", file=sys.stderr, flush=True)
            code = EXIT_FAILED
    if distributed:
        # Distributed TensorFlow can take tens of seconds to tear down its gRPC
        # channels; everything is written and flushed, so leave now.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _exit_on_sigterm(config: TrainConfig) -> None:
    """On SIGTERM (the pod is being deleted, evicted or preempted), stop now with ``EXIT_TERMINATED``.

    What the epoch checkpoints hold is safe; the epoch under way is lost, and trained again after
    the restart. Waiting for the kubelet's SIGKILL instead would keep the replacement pod (and,
    in a distributed run, every other replica) waiting for the whole grace period.
    """
    def stop(signum, frame):
        print(f"stopping: SIGTERM (the pod is being deleted, evicted or preempted): exiting with "
              f"{EXIT_TERMINATED}; a restart resumes from the latest checkpoint in {config.model_dir}.",
              file=sys.stderr, flush=True)
        os._exit(EXIT_TERMINATED)  # at once: TensorFlow's threads would delay a normal exit

    global _sigterm_handler
    _sigterm_handler = stop
    signal.signal(signal.SIGTERM, stop)


# The words of TensorFlow's errors that say which peer went away, and how.
_PEER_LOST_WORDS = ("aborted by", "unhealthy", "Socket closed", "Connection reset", "failed to connect")


def _lost_peer(err: BaseException) -> str | None:
    """The line of ``err`` that says a peer is gone, if ``err`` is how TensorFlow says so; else None.

    A collective or RPC to a vanished replica raises UnavailableError (a reset connection,
    missed heartbeats), DeadlineExceededError (a timeout), AbortedError or CancelledError. The
    first line of the message is only "Graph execution error:"; the reason is further down.
    """
    import tensorflow as tf  # already loaded: training ran

    if not isinstance(err, (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
                            tf.errors.AbortedError, tf.errors.CancelledError)):
        return None
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    telling = next((line for line in lines if any(word in line for word in _PEER_LOST_WORDS)), None)
    return (telling or _first_line(err) or type(err).__name__)[:300]


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:500] if text else ""


if __name__ == "__main__":
    sys.exit(main())
