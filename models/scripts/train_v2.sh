#!/usr/bin/env bash
# Age model v2, every stage in order (issue 15; models/README.md "Age model v2"). Seeded;
# each stage skips what is already there, the long ones resume (`--resume`). Run from
# anywhere; needs ../shared/data, the project's venv and a release agegate binary.
#
#   scripts/train_v2.sh [crops|teachers|stage1|stage2|export|eval|all]
#   scripts/train_v2.sh ablations   # the model card's stage-1 rows (not part of `all`)
#   INIT=shipped scripts/train_v2.sh stage2   # stage 2 from the shipped graph's weights
#   THREADS=2 scripts/train_v2.sh ...         # two threads when no build runs beside it
#
# Stage 2 resumes from $R/v2_s2/last.pt, else from the committed fp16 model file
# checkpoints/v2_s2_fp16.pt (v2_s2_shipped with INIT=shipped; models/README.md
# "Continuing training on a fresh machine").
#
# Times on a 2-core Xeon with a Rust build beside it: crops ~40 min, teachers ~2 h
# (the CILF teacher at 224 px: 45 min), stage 1 ~30 min, stage 2 ~25 min per epoch,
# export 1 min, eval (clean + 8 kinds) ~1 h.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$HOME/.cache/agegate/venv/bin/python}
AGEGATE=${AGEGATE:-../target/release/agegate}
DATA=${DATA:-../../shared/data/utkface}
C=.cache/crops T=.cache/teachers R=${RUNS:-$HOME/.cache/agegate/runs}
# intra-op threads: 1 beside a Rust build (two spin-wait there), 2 on an idle 2-core box
THREADS=${THREADS:-1}
INIT=${INIT:-s1}
stage=${1:-all}
# The runtime's crops, with the board the eval uses (the default path is the repo root's).
crops() { "$AGEGATE" crops --board ../boards/dev.toml "$@"; }
want() { [ "$stage" = all ] || [ "$stage" = "$1" ]; }
case $stage in crops | teachers | stage1 | stage2 | export | eval | all | ablations) ;;
*) echo "train_v2.sh: unknown stage '$stage'" >&2; exit 2 ;; esac
case $INIT in s1 | shipped) ;;
*) echo "train_v2.sh: INIT '$INIT': s1 or shipped" >&2; exit 2 ;; esac
# stage 2's run: from stage 1 (v2_s2) or from the shipped graph (v2_s2_shipped)
S2=v2_s2
if [ "$INIT" = shipped ]; then S2=v2_s2_shipped; fi

if want crops; then
    # The runtime's own crops (detector + alignment), clean, in scenes, and degraded val.
    [ -d $C/train_144 ] || crops --manifest $DATA/train.csv --size 144 --out $C/train_144
    [ -d $C/val_144 ] || crops --manifest $DATA/val.csv --size 144 --out $C/val_144
    [ -d $C/val_224 ] || crops --manifest $DATA/val.csv --size 224 --out $C/val_224
    [ -d .cache/views_src/train_scene ] ||
        $PY -m agegate_models.views scene --manifest $DATA/train.csv --out .cache/views_src/train_scene --seed 1
    [ -d $C/train_scene_144 ] || crops --manifest .cache/views_src/train_scene/manifest.csv \
        --size 144 --out $C/train_scene_144
    for k in grey lowres blur jpeg scan small dark colorcast; do
        [ -d .cache/degraded/val/$k ] ||
            $PY -m agegate_models.degrade --manifest $DATA/val.csv --kinds $k --out .cache/degraded/val
        [ -d $C/val_deg_144/$k ] || crops --manifest .cache/degraded/val/$k/manifest.csv \
            --size 144 --out $C/val_deg_144/$k
    done
fi

if want teachers; then
    # Soft targets for distillation: the CILF head on faceres-deep at 224 px (the best
    # teacher, val MAE 4.53), the two registry networks' own age heads, and age-v1.
    [ -f $R/teacher_deep224/best.pt ] || $PY -m agegate_models.train --backbone faceres-deep \
        --image-size 224 --flip-aug true --epochs 6 --batch-size 256 --lr 2e-3 --text-lr 3e-4 \
        --balance-alpha 0.5 --feat-dropout 0.2 --threads 1 --out $R/teacher_deep224
    for m in train val; do
        [ -f $T/cilf-deep224_$m.npz ] || $PY -m agegate_models.teachers cilf \
            --ckpt $R/teacher_deep224/best.pt --manifest $DATA/$m.csv --out $T/cilf-deep224_$m.npz
        for tower in faceres-deep faceres; do
            [ -f $T/${tower}_$m.npz ] || $PY -m agegate_models.teachers own-head --tower $tower \
                --manifest $DATA/$m.csv --out $T/${tower}_$m.npz
        done
        if [ ! -f $T/agev1_$m.npz ]; then
            # age-v1 runs in its own venv (scripts/agev1_teacher.py says how to make it).
            "$HOME/.cache/agegate/venv-agev1/bin/python" scripts/agev1_teacher.py \
                --manifest $DATA/$m.csv --out $T/agev1_$m
            $PY -m agegate_models.teachers agev1 --dir $T/agev1_$m --out $T/agev1_$m.npz
        fi
    done
fi

common=(--views $C/train_144/manifest.csv --val $C/val_144/manifest.csv
    --val-degraded $C/val_deg_144 --tower faceres-deep --image-size 144 --threads "$THREADS")

if want stage1; then
    # The head alone on the frozen tower, age-balanced sampling (LDS, alpha 1).
    [ -f $R/s1_a1/last.pt ] || $PY -m agegate_models.student "${common[@]}" --frozen true \
        --epochs 3 --batch-size 128 --lr 1e-3 --text-lr 3e-4 --warmup-steps 100 \
        --balance sample --balance-alpha 1.0 --log-every 40 --out $R/s1_a1
fi

if want stage2; then
    # The whole tower and head on clean and scene crops, on-the-fly degradations,
    # balanced sampling, band-bias penalty on the first estimate, teacher-ensemble KD.
    # INIT=shipped: from the shipped graph (its int8 weights dequantized, its text side
    # fixed; the 2nd and 3rd correction steps, not in the graph, start fresh) into v2_s2_shipped
    init=(--init $R/s1_a1/last.pt)
    if [ "$INIT" = shipped ]; then init=(--init-from-shipped age_student_int8.onnx); fi
    resume=()
    if [ -f $R/$S2/last.pt ]; then resume=(--resume $R/$S2/last.pt)
    elif [ -f checkpoints/${S2}_fp16.pt ]; then resume=(--resume checkpoints/${S2}_fp16.pt); fi
    $PY -m agegate_models.student "${common[@]}" \
        --views $C/train_144/manifest.csv,$C/train_scene_144/manifest.csv --view-probs 0.6,0.4 \
        "${init[@]}" \
        --teachers $T/cilf-deep224_train.npz,$T/faceres-deep_train.npz,$T/faceres_train.npz,$T/agev1_train.npz \
        --teacher-weights 2,1,1,0.5 --loss-kd 0.5 \
        --balance sample --balance-alpha 1.0 --loss-bias 0.02 --loss-bias-step 0 \
        --epochs 4 --batch-size 64 --lr 3e-4 --text-lr 1e-4 --tower-lr 5e-4 --warmup-steps 150 \
        --aug-p 0.5 --log-every 25 --out $R/$S2 "${resume[@]}"
fi

if want export; then
    # int8 weights + the p_over output; then re-pin the board files to the new file.
    $PY -m agegate_models.export --student $R/$S2/best.pt --no-fixture
    (cd .. && scripts/pin-boards)
fi

if want eval; then
    $PY scripts/eval_gate.py --age-model age_student_int8.onnx --agegate "$AGEGATE" --out .cache/eval_v2
fi

if [ "$stage" = ablations ]; then
    # One part at a time on the stage-1 setting (frozen tower, cached features, 3 epochs,
    # seed 0 unless said): distillation from the registry heads, from the whole ensemble
    # with the CILF teacher, the augmentation views (the photo in a scene and degraded,
    # cropped by the runtime, mixed as stage 2 mixes them: 0.3 clean, 0.4 scene, 0.3
    # degraded), the scene view alone, both, and the baseline, the augmentation and the two
    # distillations again with another seed (the seed spread). Needs the crops and
    # teachers stages first.
    [ -d .cache/views_src/train_degraded ] || $PY -m agegate_models.views degraded \
        --manifest $DATA/train.csv --out .cache/views_src/train_degraded --seed 2
    [ -d $C/train_deg_144 ] || crops --manifest .cache/views_src/train_degraded/manifest.csv \
        --size 144 --out $C/train_deg_144
    s1=("${common[@]}" --frozen true --epochs 3 --batch-size 128 --lr 1e-3 --text-lr 3e-4
        --warmup-steps 100 --balance sample --balance-alpha 1.0 --log-every 40)
    aug=(--views $C/train_144/manifest.csv,$C/train_scene_144/manifest.csv,$C/train_deg_144/manifest.csv
        --view-probs 0.3,0.4,0.3)
    kd3=(--teachers $T/faceres-deep_train.npz,$T/faceres_train.npz,$T/agev1_train.npz
        --teacher-weights 1,1,0.5 --loss-kd 0.5)
    kd4=(--teachers $T/cilf-deep224_train.npz,$T/faceres-deep_train.npz,$T/faceres_train.npz,$T/agev1_train.npz
        --teacher-weights 2,1,1,0.5 --loss-kd 0.5)
    run() { [ -f "$R/$1/last.pt" ] || $PY -m agegate_models.student "${s1[@]}" "${@:2}" --out "$R/$1"; }
    run s1_a1_kd3 "${kd3[@]}"
    run s1_a1_kd4 "${kd4[@]}"
    run s1_a1_scene --views $C/train_144/manifest.csv,$C/train_scene_144/manifest.csv --view-probs 0.6,0.4
    run s1_a1_aug "${aug[@]}"
    run s1_a1_aug_seed1 "${aug[@]}" --seed 1
    run s1_a1_aug_kd4 "${aug[@]}" "${kd4[@]}"
    run s1_a1_seed1 --seed 1
    run s1_a1_kd3_seed1 "${kd3[@]}" --seed 1
    run s1_a1_kd4_seed1 "${kd4[@]}" --seed 1
fi
