"""Install a trained checkpoint as the embedded default model (``engine/assets/default_model``).

    python scripts/make_default_model.py runs/warp/checkpoints/step-0002000 --config trainer/configs/warp-cpu.toml \
        --report reports/eval --notes trainer/configs/warp-cpu.md --hours 1.0

Writes the weights in float16 without optimizer state (half the size; the engine computes in
float32), atomically, and ``MODEL_CARD.md``: data, schedule, steps, training time, and the
evaluation figures of ``slidergan evaluate``'s report when one is given. The folder's audio model
(``audio.safetensors``, ``slidergan train-audio``) and its section of the card are kept. ``--keep-card``
writes the weights alone (a new discriminator in a model whose card keeps its history by hand):

    python scripts/make_default_model.py engine/assets/default_model --keep-card \
        --discriminator-from runs/head-warped50/checkpoints/step-0001500
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from engine.animator import DEFAULT_MODEL_DIR
from engine.atomic import write_bytes_atomic, write_text_atomic
from engine.audio import AUDIO_MODEL_FILE
from engine.checkpoint import load_checkpoint, save_checkpoint
from trainer.evaluate import fmt_regression, fmt_summary

AUDIO_CARD_HEADING = "## Audio model"


def schedule(tc: dict, steps: int) -> str:
    """One training run's schedule, from the train config saved in its checkpoint."""
    if tc.get("teacher"):
        return (f"distilled from `{tc['teacher']}`: {steps} steps at batch {tc.get('batch_size')} "
                f"({tc.get('paired_steps')} on {', '.join(tc.get('paired') or [])} with their targets, then "
                f"{tc.get('unpaired_steps')} on {', '.join(tc.get('unpaired') or [])} with other faces' p"
                + (f", {tc['paired_share']:.0%} of them on pairs" if tc.get("paired_share") else "")
                + f"), L1 to the teacher's I_gen and A on the same warped frames, Adam {tuple(tc.get('betas', []))}, "
                f"lr {tc.get('lr')}, linear decay over the last {tc.get('lr_decay', 0):.0%}")
    return (f"{steps} steps at batch {tc.get('batch_size')} ({tc.get('paired_steps')} paired on "
            f"{', '.join(tc.get('paired') or [])}, then {tc.get('unpaired_steps')} unpaired"
            + (f", {tc['paired_share']:.0%} of its G-step cycles on pairs" if tc.get("paired_share") else "")
            + f"), gan {tc.get('gan')}, n_critic {tc.get('n_critic')}, Adam "
            f"{tuple(tc.get('betas', []))}, lr G {tc.get('lr')} / D {tc.get('lr_d')}, linear decay over the last "
            f"{tc.get('lr_decay', 0):.0%}, loss weights "
            + ", ".join(f"{k} {v:g}" for k, v in (tc.get('weights') or {}).items())
            + f", identity embedder `{tc.get('identity')}`")


def training_runs(ck) -> list[tuple[dict, int]]:
    """(train config, steps) of the run that made ``ck`` and of the runs its ``init`` weights came from,
    oldest first."""
    runs = []
    while ck is not None:
        tc = ck.meta.get("train_config", {})
        runs.insert(0, (tc, ck.step))
        init = tc.get("init") or tc.get("teacher")   # a distilled model: the teacher's runs came first
        ck = load_checkpoint(init) if init and Path(init).exists() else None
    return runs


def model_card(ck, report: dict | None, hours: float | None, machine: str, config: str) -> str:
    from trainer.holdout import HELD_OUT_CLIPS, HELD_OUT_PORTRAITS
    from trainer.motion import report_lines
    tc = ck.meta.get("train_config", {})
    runs = training_runs(ck)
    L = ["# The embedded default model", "",
         f"SliderGAN-{ {'rad': 'RaD', 'wgp': 'WGP'}.get(tc.get('gan'), tc.get('gan'))}, profile `{ck.config.name}` "
         f"({ck.config.image_size} x {ck.config.image_size}, {ck.config.n_params} parameters: "
         f"{ck.config.n_exp} expression + {ck.config.n_speech} speech), blendshape models `{ck.blendshapes}` "
         "(`engine/assets/blendshapes`). Weights stored in float16; the engine computes in float32.", "",
         "## Training", ""]
    for i, (run_tc, steps) in enumerate(runs):
        what = "Schedule" if len(runs) == 1 else f"Stage {i + 1}" + (
            "" if not i else f" (taught by stage {i}'s generator)" if run_tc.get("teacher") else
            f" (from the weights of stage {i})")
        L.append(f"- {what}: {schedule(run_tc, steps)}.")
    donor = ck.meta.get("discriminator_from")
    if donor:
        L.append(f"- The discriminator (critic and regression head D_p) is not this run's: it is the one of "
                 f"`{donor['path']}` (profile `{donor['profile']}`, step {donor['step']}), the same D network, "
                 "whose regression head reads new faces better than this run's did after its short schedule.")
    L += [f"- Data: paired {tc.get('paired')}, unpaired {tc.get('unpaired')}, validation {tc.get('val')} "
          f"(the commands are in `{config}`).",
          "- Held out of every training set (`trainer/holdout.py`): "
          + ", ".join(f"`{p}`" for p in HELD_OUT_CLIPS + HELD_OUT_PORTRAITS) + ".",
          f"- Time: {hours:.1f} h on {machine}." if hours else f"- Machine: {machine}.", ""]
    if report and report.get("motion"):
        L += report_lines(report.get("motion"), report.get("self_reenactment"), figures=False)   # (in the report)
    if report and report.get("transfer"):
        p = report["protocol"]
        L += ["## Evaluation", "",
              f"`slidergan evaluate` on the held-out video `{p['held_out_video']}` ({p['frames_used']} frames; "
              "full report with figures: `reports/eval/README.md`).", "",
              "| Method | IED (x1e-2) | Landmark error (px @128) | Identity cos to source |", "|---|---|---|---|"]
        for name, r in report["transfer"].items():
            L.append(f"| {name} | {fmt_summary(r['ied'], 100)} | {fmt_summary(r['landmark_px'], 1, 2)} | {fmt_summary(r.get('identity_cos'))} |")
        L += ["", "| Regression (Table 4) | real frames | from the clip's neutral | generated |", "|---|---|---|---|"]
        for name, r in report["models"].items():
            L.append(f"| {name} | {fmt_regression(r['regression_real'])} | "
                     f"{fmt_regression(r.get('regression_real_from_neutral'))} | {fmt_regression(r['regression_generated'])} |")
        alone = report.get("regression_mesh_alone")
        if alone:
            L.append(f"| no network: the face mesh of each frame fitted alone | {fmt_regression(alone['real'])} | "
                     f"{fmt_regression(alone['real_from_neutral'])} | |")
        L.append("| paper: SliderGAN | 0.131 | | 0.258 |")
        ref = report.get("identity_reference") or {}
        if ref:
            L += ["", f"Identity reference (same network, real faces): same person cos "
                  f"{fmt_summary(ref['same_person_cos'])}, different people {fmt_summary(ref['different_people_cos'])}."]
        L.append("")
    return "\n".join(L)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--report", help="a `slidergan evaluate` folder (its metrics.json goes into the card)")
    ap.add_argument("--hours", type=float, help="training time")
    ap.add_argument("--machine", default="a 2-core CPU (AVX2), no GPU")
    ap.add_argument("--notes", help="a Markdown file appended to the card (what the model can and cannot do)")
    ap.add_argument("--discriminator-from", metavar="CHECKPOINT",
                    help="ship this checkpoint's discriminator (critic and regression head; the same D network) "
                         "instead of the run's own: the card says so")
    ap.add_argument("--config", default="trainer/configs/default-cpu.toml", help="the training config (its header "
                    "has the data commands)")
    ap.add_argument("-o", "--out", default=str(DEFAULT_MODEL_DIR))
    ap.add_argument("--keep-card", action="store_true",
                    help="write the weights only and leave the folder's MODEL_CARD.md as it is (a card whose history "
                         "is kept by hand, e.g. when only the discriminator changes: edit it yourself)")
    args = ap.parse_args(argv)
    if args.keep_card and not (Path(args.out) / "MODEL_CARD.md").is_file():
        ap.error(f"--keep-card: {args.out} has no MODEL_CARD.md to keep")
    ck = load_checkpoint(args.checkpoint)
    # a profile renamed since the run (same network): the card and the file say today's name
    from engine.config import PROFILES
    named = [p for p in PROFILES.values() if p.to_dict() | {"name": ""} == ck.config.to_dict() | {"name": ""}]
    if named:
        ck.config = named[0]
    if args.discriminator_from:
        donor = load_checkpoint(args.discriminator_from)
        ck.discriminator.load_state_dict(donor.discriminator.state_dict())   # same D network, or an error
        # a donor that got its D elsewhere (a previous default) names that D's run
        origin = donor.meta.get("discriminator_from") or {"path": str(args.discriminator_from),
                                                          "step": donor.step, "profile": donor.config.name}
        ck.meta = {**ck.meta, "discriminator_from": origin}
    report = json.loads((Path(args.report) / "metrics.json").read_text()) if args.report else None
    out = Path(args.out)
    # the folder's audio model (trained on its own, engine/audio.py) and its part of the card survive
    audio = (out / AUDIO_MODEL_FILE).read_bytes() if (out / AUDIO_MODEL_FILE).is_file() else None
    old_card = (out / "MODEL_CARD.md").read_text() if (out / "MODEL_CARD.md").is_file() else ""
    audio_card = old_card[old_card.index(AUDIO_CARD_HEADING):] if AUDIO_CARD_HEADING in old_card else ""
    save_checkpoint(out, ck.config, ck.generator, ck.discriminator, param_names=ck.param_names,
                    blendshapes=ck.blendshapes, step=ck.step, meta=ck.meta, half=True)
    if audio is not None:
        write_bytes_atomic(out / AUDIO_MODEL_FILE, audio)
    if args.keep_card:    # save_checkpoint replaced the folder: the card goes back as it was
        write_text_atomic(out / "MODEL_CARD.md", old_card)
        print(f"kept {out / 'MODEL_CARD.md'} as it was: edit what the new weights change")
    else:
        card = model_card(ck, report, args.hours, args.machine, args.config)
        if args.notes:
            card += "\n" + Path(args.notes).read_text()
        if audio_card:
            card = card.rstrip("\n") + "\n\n" + audio_card
        write_text_atomic(out / "MODEL_CARD.md", card)
    print(f"wrote {out} (step {ck.step}, {sum(f.stat().st_size for f in out.iterdir()) / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
