"""The plain commands (mp3d-pipeline, mp3d-predict, mp3d-evaluate) on jsonargparse: every argparse spelling still
parses to the same values, ``--print_config`` writes a YAML that ``--config`` reads back to the same options, and a
config file mixes with flags (later wins, ``--extra`` appends)."""

import pytest

from lightning_mp3d import evaluation, pipeline, predict

COMMANDS = {  # the command's main, its parser, and a command line using each kind of option it has
    "mp3d-pipeline": (
        pipeline.main,
        pipeline.build_parser,
        ["--preset", "cpu", "--workdir", "w", "--stages", "aae,distill", "--skip-eval", "--wandb", "disabled",
         "--extra=all:--trainer.max_epochs=1", "--extra", "aae:--x: null", "--ablation", "--seeds", "2",
         "--supervised", "--eval-images", "8"],
    ),
    "mp3d-predict": (
        predict.main,
        predict.build_parser,
        ["--checkpoint", "c.ckpt", "--teacher-checkpoint", "t.ckpt", "--aae-checkpoint", "007", "--input", "null",
         "--out", "o", "--batch-size", "2", "--threshold", "0.0", "--fit", "crop", "--no-png", "--refine",
         "--export", "m.pt", "--intrinsics", "cam.json", "--no-channels-last", "--bf16", "--compile"],
    ),
    "mp3d-evaluate": (
        evaluation.main,
        evaluation.build_parser,
        ["--checkpoint", "c.ckpt", "--dataset", "mupots", "--root", "MultiPersonTestSet", "--split", "validation",
         "--intrinsics", "i.json", "--num-images", "4", "--batch-size", "4", "--out", "results/x"],
    ),
}  # fmt: skip


def options(namespace) -> dict:
    return {k: v for k, v in vars(namespace).items() if k != "config"}


def test_argparse_spellings_parse_to_the_values_argparse_gave():
    args = pipeline.build_parser().parse_args(COMMANDS["mp3d-pipeline"][2])
    assert (args.preset, str(args.workdir), args.stages, args.wandb, args.seeds, args.eval_images) == (
        "cpu", "w", "aae,distill", "disabled", 2, 8,
    )  # fmt: skip
    assert args.skip_eval is True and args.ablation is True and args.supervised is True
    assert args.extra == ["all:--trainer.max_epochs=1", "aae:--x: null"]  # repeatable, verbatim (not read as YAML)
    defaults = pipeline.build_parser().parse_args([])
    assert (defaults.preset, defaults.extra, defaults.skip_eval, defaults.wandb, defaults.seeds) == (
        "tiny", [], False, None, 1,
    )  # fmt: skip
    args = predict.build_parser().parse_args(COMMANDS["mp3d-predict"][2])
    got = (args.aae_checkpoint, args.input, args.batch_size, args.threshold, args.fit)
    assert got == ("007", "null", 2, 0.0, "crop")
    assert all(getattr(args, k) is True for k in ("no_png", "refine", "no_channels_last", "bf16", "compile"))
    args = predict.build_parser().parse_args(["--checkpoint", "c", "--input", "i", "--out", "o", "--no-png", "false"])
    assert (args.no_png, args.refine, args.threshold, args.export, args.fit) == (False, False, None, None, "pad")
    args = evaluation.build_parser().parse_args(COMMANDS["mp3d-evaluate"][2])
    assert (args.dataset, args.root, args.num_images, args.batch_size, args.out) == (
        "mupots", "MultiPersonTestSet", 4, 4, "results/x",
    )  # fmt: skip


@pytest.mark.parametrize("command", list(COMMANDS))
def test_print_config_round_trips_through_a_config_file(command, tmp_path, capsys):
    main, build_parser, argv = COMMANDS[command]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--print_config"])  # prints and exits before anything runs
    assert exit_info.value.code == 0
    config = tmp_path / "run.yaml"
    config.write_text(capsys.readouterr().out)
    assert options(build_parser().parse_args(["--config", str(config)])) == options(build_parser().parse_args(argv))
    assert options(build_parser().parse_args(["-c", str(config)])) == options(build_parser().parse_args(argv))


def test_pipeline_config_file_mixes_with_flags(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("preset: cpu\nskip_eval: true\nextra: ['aae:--a=1']\n")
    args = pipeline.build_parser().parse_args(["--config", str(config), "--extra=all:--b=2", "--preset", "tiny"])
    assert (args.preset, args.skip_eval, args.extra) == ("tiny", True, ["aae:--a=1", "all:--b=2"])
    config.write_text("skip_eval: 3\n")
    with pytest.raises(SystemExit):  # typed: a config file is validated as the command line is
        pipeline.build_parser().parse_args(["--config", str(config)])
    config.write_text("extra: aae:--a=1\n")
    with pytest.raises(SystemExit, match="list of STAGE:ARG"):
        pipeline.main(["--config", str(config), "--workdir", str(tmp_path)])
