#!/usr/bin/env bash
# Sweep check grids: CSVs whose bytes a change to the sweep's speed must not alter.
#
#   scripts/sweep-check-grids.sh COSTSIM OUTDIR
#
# Writes each grid with the costsim binary COSTSIM into OUTDIR and prints the md5 of each CSV.
# Run it with the build before a change and the build after, and compare the two lists (they
# must be identical); docs/sweeps-history.md records the sums each session saw. g1 is the
# 10⁶-point command of docs/sweeps.md; the others cover long rank lines on a GPU and the
# generic CPU (launch lists kept), every optimizer, fp16-mixed and fp32, three micro-batches,
# layer selections, no clipping, every built-in GPU, libtorch with a bare loop, checkpointing and
# eager attention, CUDA-graph replay with base-dtype adapters on a subset of targets, and (g8,
# g9) many sequence lengths a line, where sequence templates derive the later lines' rank
# templates (bf16 and fp32, layer selections, the CPU, checkpointing, eager attention, SGD).
# About 10 s on two cores.
set -euo pipefail
if [ $# -ne 2 ]; then
  echo "usage: $0 COSTSIM OUTDIR" >&2
  exit 2
fi
B=$1
O=$2
mkdir -p "$O"
M=gpt2,gpt2-medium,gpt2-large,gpt2-xl,tinyllama-1.1b,llama2-7b,llama2-13b,llama2-70b,llama3-8b,mistral-7b
run() { "$B" sweep "$@" --format csv --quiet; }
run --model $M --hw h200 --method all --batch 1,2,4,8,16 --seq 16..800:+16 --rank 1..100 \
  --out "$O/g1.csv"
run --model gpt2,tinyllama-1.1b,llama2-7b --hw h200,cpu --method all --batch 1,4 --seq 64,512 \
  --rank 1..1100 --out "$O/g2.csv"
for opt in adamw adamw-fused adamw-single sgd; do
  run --model gpt2,llama2-7b --hw a100,l4 --method lora,paca --batch 2 --seq 128,384 \
    --rank 1..300:+7 --precision fp16-mixed,fp32 --grad-accum 3 --train-layers all,upper:0.5 \
    --optimizer "$opt" --out "$O/g3-$opt.csv"
done
run --model gpt2,llama2-7b --hw a100 --method all --batch 1,8 --seq 128,256 --rank 1..400 \
  --no-grad-clip --out "$O/g4.csv"
run --model gpt2,tinyllama-1.1b,llama2-7b --hw all --method all --batch 1,4 --seq 128,512 \
  --rank 1..12 --out "$O/g5.csv"
run --model gpt2,llama2-7b --hw h200,cpu --method all --batch 2 --seq 64,256 --rank 1..40 \
  --runtime libtorch --loop bare --grad-checkpointing --attention eager --out "$O/g6.csv"
run --model gpt2,llama2-7b --hw h100 --method lora --batch 2 --seq 64,256 --rank 1..40 \
  --targets q_proj,v_proj,c_attn --adapter-dtype base --runtime cuda-graph --out "$O/g7.csv"
run --model gpt2,tinyllama-1.1b,llama2-7b --hw h200,cpu --method all --batch 1,3 --seq 16..1024:+48 \
  --rank 1..30 --precision bf16-mixed,fp32 --grad-accum 2 --train-layers all,upper:0.5 \
  --out "$O/g8.csv"
run --model gpt2,llama2-7b --hw a100 --method lora,paca --batch 2 --seq 32..2048:+64 --rank 1..64 \
  --precision fp16-mixed --grad-checkpointing --attention eager --optimizer sgd --no-grad-clip \
  --out "$O/g9.csv"
(cd "$O" && md5sum ./*.csv)
