"""The `portfolio-mlops` subcommands. Each module registers its own parser and handler:

    def add_parser(subcommands) -> None:   # sub.add_parser(...), then .set_defaults(func=handler)

and cli.build_parser calls them in --help order (cli.COMMANDS). A handler takes the parsed arguments and
returns the exit status; one that needs the run configuration is wrapped in cli.configured. Imports of
the work itself wait inside the handlers, so building the parser stays cheap.

    run.py      run (the engines: inprocess here, kfp from pipelines/cli.py)
    steps.py    ingest, features, train, backtest: the chain one step at a time, through folders
    models.py   promote, models: the registry
    serve.py    serve
    predict.py  predict
    config.py   config
(`stack` lives with its supervisor: portfolio_mlops/devstack/cli.py.)
"""
