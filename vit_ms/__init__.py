"""vit-ms: Vision Transformers for MindSpore.

Settings flow config -> variants/runtime -> plan, and everything else reads the plan. The code is stacked in
layers that only point down: a module imports from its own package (or file) and from the layers below it,
never from a layer above, nor from a neighbour on its own layer. From the top down:

    commands   export convert benchmark plot doctor demo mindrecord loadgen augment_parity cann_standins  python -m
                                                     vit_ms.<name>: parse the arguments, call below; convert
                                                     also holds weights in and out
    serving    serve                                 python -m vit_ms.serve: a page and a JSON API for one model
    tools      tools                                 benchmarks, FLOP count, profiling: built on training
    inference  inference                             evaluation, prediction, attention maps, writing exports
    train      train                                 the train step, the training loop, writing checkpoints, the run
    loader     loader                                one function opens any model for use; exported files read
    sources    data weights                          images into batches; published weights and our checkpoints read
    plan       plan cli                              the resolved run plan; the shared command-line arguments
    parts      models figures                        the ViT cells; pictures drawn with matplotlib
    yaml       config_loader                         YAML files and --set overrides -> a checked Config
    config     config                                the config's sections, keys and legal values
    setting    variants runtime chips                the architecture table; MindSpore's context, ranks; chip facts
    launch     environment                           the environment variables read, checked before MindSpore loads
    ground     errors fs                             user-facing errors (also written to the run's log), file checks
    logging    logs                                  logging setup: the console and the run's log files

The scripts train.py, eval.py and infer.py stand above all of them. tests/test_layers.py reads this table
and fails on an import that points up or sideways, on an import circle, and on a function-local import
without its reason beside it (allowed only for an optional package, or to keep MindSpore's seconds-long
import out of a command's --help).
"""
from .environment import refuse_bad_mindspore_environment

refuse_bad_mindspore_environment()  # first: MindSpore's own import fails on a malformed GLOG_v with a traceback
