/*
train_cpu.c — trains a small hybrid on the CPU with the reference implementation (hybrid_cpu.h),
so the model can be studied, stepped through and diffed without a GPU.

    make train_cpu && ./train_cpu                 # built-in data, small SSSF hybrid -> train_cpu.jsonl, train_cpu.ckpt
    ./train_cpu -p SRF -w 16 --mixer gla -n 100   # any pattern, window, mixer
    ./train_cpu -n 100 -c run.ckpt --ckpt-every 20  # checkpoints; ^C saves one and exits
    ./train_cpu -n 200 -c run.ckpt -r run.ckpt       # resume: the same losses as one 200-step run
    ./train_cpu -h                                # every flag with its default

Prints loss, lr, grad norm, ms, tok/s, elapsed time and ETA per step, val loss every -v steps, a
sample every --sample-every steps, the needle grid and retrieval heads every --eval-every steps (off
by default: slow on a CPU), and a summary at the end; writes one JSON line per step (and per val and
eval) to -o (default train_cpu.jsonl) and the checkpoint to -c (default train_cpu.ckpt). Checkpoints, resume, the non-finite guard and signals behave
as in train_hybrid (README, "Training runs").
*/
#include "../train_common.h"

static double val_loss(Model* m, DataLoader* val, int batches) {
    double sum = 0.0;
    dataloader_rewind(val);
    for (int i = 0; i < batches && !stop_requested(); i++) {
        dataloader_next_batch(val);
        sum += model_forward(m, val->inputs, val->targets, val->B, val->T);
    }
    return sum / batches;
}

// The logits after tokens[0..n) (sample_print's NextLogits): the reference model's forward on them.
static void cpu_next_logits(void* model, const int* tokens, int n, float* logits) {
    Model* m = (Model*)model;
    model_forward(m, tokens, NULL, 1, n);
    const real* row = gact(m, G_LOGITS) + (size_t)(n - 1) * m->cfg.padded_vocab;
    for (int v = 0; v < m->cfg.vocab; v++) { logits[v] = (float)row[v]; }
}

int main(int argc, char** argv) {
    TrainArgs a;
    train_args_default(&a);
    a.L = 4; a.C = 64; a.H = 4; a.window_list = "32";
    a.B = 8;
    a.opt = opt_config_default(300);
    a.opt.lr = 3e-3;
    a.data.needle_frac = 0.0f;  // the CPU default shows language modelling; needles are opt-in
    a.val_every = 50; a.val_batches = 4;
    a.log_path = "train_cpu.jsonl";
    a.ckpt_path = "train_cpu.ckpt";
    a.eval_samples = 4;         // needle evals are opt-in (--eval-every)
    a.sample_every = 100;
    FlagSpec flags[MAX_FLAGS];
    int n_flags = train_flags(&a, flags);
    int given[MAX_FLAGS] = {0};
    flags_parse(flags, n_flags, argc, argv, given);
    train_args_resolve(&a);
    if (!a.sample_only) { train_check_outputs(&a); }

    DataLoader train, val;
    train_open_data(&train, &val, &a);
    Tokenizer tok = tokenizer_load(a.tokenizer, train.vocab.data_vocab);
    RunRecord run = train_run_record(&a, 1, &train, &val);
    Model model;
    int step0 = 0;
    if (a.resume[0]) {
        Checkpoint ck = train_resume_read(&a, flags, given, n_flags, &run, train.vocab.vocab);
        model_from_checkpoint(&model, &ck);
        step0 = ck.m ? ck.step : 0;
        if (a.sample_only) {  // --sample: one sample of the checkpoint, nothing trained or written
            sample_print(cpu_next_logits, &model, &val, &tok, model.cfg.vocab, ck.run.T > 0 ? ck.run.T : a.T, a.sample_len, ck.step);
            return 0;
        }
        checkpoint_free(&ck);
    } else {
        Config cfg = train_config(&a, &train.vocab);
        model_build(&model, &cfg, (uint64_t)a.seed);
    }
    train_lock_outputs(&a);  // one run per checkpoint and log
    RunLog log = run_log_open(a.log_path, step0, &a, &model.cfg);
    snprintf(model.freeze, sizeof(model.freeze), "%s", a.freeze);
    int model_window = model.cfg.window;  // evals and checkpoints; a step may draw another from -w's list

    print_config_table(&model.cfg, &a, model.pl.total, "CPU (fp32 reference)");
    train_resume_data(&train, &a, step0, 1);
    printf("unigram baseline: %.4f nats (the loss of a model of token frequencies)\n",
           data_unigram_entropy(&a.data, a.B, a.T, (uint64_t)a.seed, 64));
    TrainEval ev;
    train_eval_init(&ev, &a, &train.vocab);
    train_signals_install();
    RunSummary sum = run_summary_start(step0);
    for (int step = step0; step <= a.opt.steps; step++) {
        int last = step == a.opt.steps, stopping = train_stop_signal != 0;
        if (a.val_every > 0 && !stopping && (step % a.val_every == 0 || last)) {
            report_val(&log, &sum, step, val_loss(&model, &val, a.val_batches));
        }
        if (train_eval_due(&a, step, last, stopping)) {
            NeedleResult res, text_res;
            RecallResult rec;
            const NeedleGrid *grid, *text_grid;
            train_eval_pick(&a, &ev, step, last, &grid, &text_grid);
            if (ev.recall_on) { cpu_recall_eval(&model, &ev.recall, train_eval_ablate(&a, step, last), &rec); }
            cpu_needle_eval(&model, grid, &res);
            if (text_grid) { cpu_needle_eval(&model, text_grid, &text_res); }
            train_eval_report(&log, step, &model.cfg, grid, text_grid, &res, &text_res, &ev, &rec);
        }
        if (train_sample_due(&a, step, last, stopping)) { sample_print(cpu_next_logits, &model, &val, &tok, model.cfg.vocab, a.T, a.sample_len, step); }
        stopping = train_stop_signal != 0;  // a signal during the evals stops here, before the next step
        if (train_should_save(&a, step, step0, last, stopping)) {
            size_t n = model.pl.total;
            checkpoint_save(a.ckpt_path, a.ckpt_keep, &model.cfg, model.params, a.ckpt_opt ? model.m : NULL,
                            a.ckpt_opt ? model.v : NULL, n, step, &run);
        }
        if (stopping) {
            run_log_close(&log);
            return train_stop_status(&a, step);
        }
        if (last) { break; }
        double t0 = now_s(), loss = 0.0;
        model.cfg.window = train_window_at(&a, step);
        model_zero_grad(&model);
        for (int micro = 0; micro < a.accum; micro++) {
            dataloader_next_batch(&train);
            loss += model_forward(&model, train.inputs, train.targets, a.B, a.T) / a.accum;
            model_backward(&model, 1.0 / a.accum);
        }
        model.cfg.window = model_window;
        double norm = model_grad_norm(&model);
        double lr = lr_at(&a.opt, step);
        if (!train_step_finite(&a, step + 1, loss, norm)) { continue; }
        model_update(&model, &a.opt, lr, step + 1, norm);
        double ms = (now_s() - t0) * 1e3;
        double tok_s = (double)a.B * a.T * a.accum / (ms / 1e3);
        report_step(&log, &sum, step + 1, a.opt.steps, loss, lr, norm, ms, tok_s, -1.0);
    }
    run_summary_print(&sum, &a, "");
    run_log_close(&log);
    tokenizer_free(&tok);
    train_eval_free(&ev);
    model_free(&model);
    dataloader_free(&train);
    dataloader_free(&val);
    return 0;
}
