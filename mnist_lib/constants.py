"""The facts every part of the course agrees on, each defined once, here.

This module imports nothing, so any module (a pod's training script, the notebook's
client, the manifests) can import it without pulling anything else in. Keep it to
facts shared by two or more modules; a value one module alone uses lives there.
"""

# -- the shared volume and the pods ---------------------------------------------------
OUTPUT_MOUNT = "/outputs"      # where every pod mounts the shared volume (the claim mnist-outputs)
DEFAULT_NAMESPACE = "mnist"    # used when MNIST_NAMESPACE is not set
POD_USER_ID = 1000             # the image's `course` user (Dockerfile: useradd --uid 1000)
TF_PORT = 2222                 # the training operator's default "tfjob-port"
TENSORBOARD_PORT = 6006

# -- the data -------------------------------------------------------------------------
IMAGE_SIZE = 28                # MNIST images are 28 x 28 pixels ...
NUM_CLASSES = 10               # ... of the digits 0 to 9

# -- the serving contract: what train.py exports and every client relies on ------------
MODEL_NAME = "mnist"                   # the name a model is exported and served under
SIGNATURE_NAME = "serving_default"     # TF Serving's kDefaultServingSignatureDefKey
INPUT_NAME = "images"                  # float32 [batch, 28, 28], 0..1, white digit on black
OUTPUT_PROBABILITIES = "probabilities"  # float32 [batch, 10]
OUTPUT_CLASSES = "classes"             # int64 [batch]
GRPC_PORT = 8500                       # TF Serving's ports: gRPC ...
REST_PORT = 8501                       # ... and REST

# -- what training writes each epoch (Keras' TensorBoard names) ------------------------
OBJECTIVE = "validation/epoch_accuracy"  # the scalar a sweep (and Katib) maximises

# -- what a failing job shows -------------------------------------------------------------
LOG_TAIL_LINES = 30            # lines of a pod's log quoted in an error

# -- how training ends: the exit codes of `python -m mnist_lib.train`, as the cluster reads them ---
# 128 or more (128 + a signal: killed, OOM-killed, terminated) is what the training operator's
# restartPolicy ExitCode retries (IsRetryableExitCode, v1.9.4), and what the Jobs' podFailurePolicy
# (manifests) counts as a retry; 1 and 2 fail the job at once: running again cannot help.
EXIT_FAILED = 1                # a bug, or an error training cannot get past
EXIT_BAD_INPUT = 2             # a bad flag, corrupt data, a malformed TF_CONFIG
FIRST_RETRYABLE_EXIT_CODE = 128
EXIT_PEER_LOST = 138           # a distributed run lost a worker or parameter server: all restart
EXIT_TERMINATED = 143          # 128 + SIGTERM: the pod is being deleted, evicted or preempted
PEER_LOST_SAYS = "error: lost a peer"  # how the log says it, before EXIT_PEER_LOST
