/* tokenq.c lands here with the batch queue; until then obsd_tokenq is the tokenizer. */
typedef int obsd_tokenq_placeholder;
