/*
 * tok_encode.c: the encoding pipeline and the workspaces it runs in.
 *
 * One text goes through, in Hugging Face's order:
 *   lossy UTF-8 repair -> added tokens on the raw text -> normalizer per
 *   segment -> added tokens marked normalized -> pre-tokenizers -> BPE.
 * Each step only cuts the pieces it is given; nothing is merged across them.
 */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tokenq/tok_internal.h"

/* A piece of text being pre-tokenized. at_origin: starts at offset 0 of the
 * original text (Metaspace prepend_scheme "first" needs it). */
typedef struct {
    const uint8_t *p;
    uint32_t len;
    bool at_origin;
} span;

typedef struct {
    span *v;
    size_t n, cap;
} spanvec;

/* A matched piece of a Split: offsets within the split plus is_match. */
typedef struct {
    uint32_t start, end;
    bool match;
} piece;

typedef struct arena_block {
    struct arena_block *next;
    size_t used, cap;
    uint8_t data[];
} arena_block;

/* Pre-token cache: piece bytes -> ids. Cleared when full (results never change). */
#define CACHE_SLOTS (1u << 14)
#define CACHE_MAX_KEY 128
#define CACHE_KEY_BYTES (1u << 20)
#define CACHE_IDS (1u << 18)
typedef struct {
    uint32_t hash, key_off, ids_off;
    uint16_t key_len, ids_len; /* key_len 0xFFFF: empty */
} cache_slot;


struct tok_ws {
    struct tok_ws *next_free, *next_all;
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jit;
    spanvec a, b;
    piece *pieces;
    size_t npieces, cappieces;
    int split_kind; /* of the Split being run */
    arena_block *arena, *arena_cur;
    /* merge scratch */
    uint32_t *sym, *rank, *newid;
    int32_t *prev, *next;
    uint64_t *heap;
    size_t nheap, capsym, capheap;
    /* long-piece merge: the queued positions of each pending rank */
    struct mgroup *grp;
    struct mnode *node;
    struct mslot *gmap;
    uint32_t *gpos;
    size_t ngrp, nnode, capgrp, capnode, gmap_mask, gmap_used, capgpos;
    uint32_t lowest_queued;
    /* added-token matches */
    uint32_t *match_start, *match_end, *match_tok;
    size_t nmatch, capmatch;
    /* cache */
    cache_slot *cache;
    uint8_t *cache_keys;
    uint32_t *cache_ids;
    uint32_t cache_nkeys, cache_nids, cache_count;
};

/* ---------------- workspace ---------------- */

static struct tok_ws *ws_create(void)
{
    struct tok_ws *ws = calloc(1, sizeof *ws);
    if (!ws)
        return NULL;
    ws->md = pcre2_match_data_create(1, NULL);
    ws->mctx = pcre2_match_context_create(NULL);
    ws->jit = pcre2_jit_stack_create(32 * 1024, 64 * 1024 * 1024, NULL);
    ws->cache = malloc(CACHE_SLOTS * sizeof *ws->cache);
    ws->cache_keys = malloc(CACHE_KEY_BYTES);
    ws->cache_ids = malloc(CACHE_IDS * sizeof *ws->cache_ids);
    if (!ws->md || !ws->mctx || !ws->jit || !ws->cache || !ws->cache_keys || !ws->cache_ids) {
        tok_ws_destroy(ws);
        return NULL;
    }
    /* Long runs of one character cost one backtracking step per byte: lift the
     * limits so that no input length can make a match fail. */
    pcre2_set_match_limit(ws->mctx, UINT32_MAX);
    pcre2_set_depth_limit(ws->mctx, UINT32_MAX);
    pcre2_set_heap_limit(ws->mctx, UINT32_MAX);
    pcre2_jit_stack_assign(ws->mctx, NULL, ws->jit);
    for (size_t i = 0; i < CACHE_SLOTS; i++)
        ws->cache[i].key_len = 0xFFFF;
    return ws;
}

void tok_ws_destroy(struct tok_ws *ws)
{
    if (!ws)
        return;
    pcre2_match_data_free(ws->md);
    pcre2_match_context_free(ws->mctx);
    if (ws->jit)
        pcre2_jit_stack_free(ws->jit);
    free(ws->a.v);
    free(ws->b.v);
    free(ws->pieces);
    for (arena_block *b = ws->arena, *n; b; b = n) {
        n = b->next;
        free(b);
    }
    free(ws->sym);
    free(ws->rank);
    free(ws->newid);
    free(ws->prev);
    free(ws->next);
    free(ws->heap);
    free(ws->grp);
    free(ws->node);
    free(ws->gmap);
    free(ws->gpos);
    free(ws->match_start);
    free(ws->match_end);
    free(ws->match_tok);
    free(ws->cache);
    free(ws->cache_keys);
    free(ws->cache_ids);
    free(ws);
}

void tok_ws_destroy_all(tokenizer *tok)
{
    for (struct tok_ws *w = tok->ws_all, *n; w; w = n) {
        n = w->next_all;
        tok_ws_destroy(w);
    }
    tok->ws_all = tok->ws_free = NULL;
}

struct tok_ws *tok_ws_acquire(const tokenizer *ctok)
{
    tokenizer *tok = (tokenizer *)ctok; /* the pool is the only mutable part */
    pthread_mutex_lock(&tok->ws_lock);
    struct tok_ws *ws = tok->ws_free;
    if (ws)
        tok->ws_free = ws->next_free;
    pthread_mutex_unlock(&tok->ws_lock);
    if (ws)
        return ws;
    ws = ws_create();
    if (!ws)
        return NULL;
    pthread_mutex_lock(&tok->ws_lock);
    ws->next_all = tok->ws_all;
    tok->ws_all = ws;
    pthread_mutex_unlock(&tok->ws_lock);
    return ws;
}

void tok_ws_release(const tokenizer *ctok, struct tok_ws *ws)
{
    tokenizer *tok = (tokenizer *)ctok;
    pthread_mutex_lock(&tok->ws_lock);
    ws->next_free = tok->ws_free;
    tok->ws_free = ws;
    pthread_mutex_unlock(&tok->ws_lock);
}

static uint8_t *arena_alloc(struct tok_ws *ws, size_t n)
{
    arena_block *b = ws->arena_cur;
    while (b && b->cap - b->used < n) {
        b = b->next;
        if (b)
            b->used = 0;
    }
    if (!b) {
        size_t cap = n > 65536 ? n : 65536;
        b = malloc(sizeof *b + cap);
        if (!b)
            return NULL;
        b->cap = cap;
        b->used = 0;
        b->next = NULL;
        if (ws->arena_cur) {
            b->next = ws->arena_cur->next;
            ws->arena_cur->next = b;
        } else {
            b->next = ws->arena;
            ws->arena = b;
        }
    }
    ws->arena_cur = b;
    uint8_t *p = b->data + b->used;
    b->used += n;
    return p;
}

static void arena_reset(struct tok_ws *ws)
{
    ws->arena_cur = ws->arena;
    if (ws->arena)
        ws->arena->used = 0;
}

static int spanvec_push(spanvec *v, const uint8_t *p, size_t len, bool at_origin)
{
    if (v->n == v->cap) {
        size_t c = v->cap ? v->cap * 2 : 64;
        span *q = realloc(v->v, c * sizeof *q);
        if (!q)
            return -1;
        v->v = q;
        v->cap = c;
    }
    v->v[v->n++] = (span){p, (uint32_t)len, at_origin};
    return 0;
}

static int pieces_push(struct tok_ws *ws, uint32_t s, uint32_t e, bool m)
{
    if (ws->npieces == ws->cappieces) {
        size_t c = ws->cappieces ? ws->cappieces * 2 : 256;
        piece *q = realloc(ws->pieces, c * sizeof *q);
        if (!q)
            return -1;
        ws->pieces = q;
        ws->cappieces = c;
    }
    ws->pieces[ws->npieces++] = (piece){s, e, m};
    return 0;
}

static int ids_push(tokenizer_ids *out, const uint32_t *ids, size_t n)
{
    if (n == 0) /* an empty piece: out->ids may still be NULL */
        return 0;
    if (out->len + n > out->cap) {
        size_t c = out->cap ? out->cap * 2 : 256;
        while (c < out->len + n)
            c *= 2;
        uint32_t *q = realloc(out->ids, c * sizeof *q);
        if (!q)
            return -1;
        out->ids = q;
        out->cap = c;
    }
    memcpy(out->ids + out->len, ids, n * sizeof *ids);
    out->len += n;
    return 0;
}

static int emit(tokenizer_ids *out, uint64_t *count, const uint32_t *ids, size_t n)
{
    *count += n;
    if (out && ids_push(out, ids, n))
        return TOKENIZER_ENOMEM;
    return 0;
}

/* ---------------- BPE ---------------- */

static int scratch_reserve(struct tok_ws *ws, size_t n)
{
    if (n <= ws->capsym)
        return 0;
    size_t c = ws->capsym ? ws->capsym : 256;
    while (c < n)
        c *= 2;
    uint32_t *s = realloc(ws->sym, c * sizeof *s);
    if (s)
        ws->sym = s;
    uint32_t *r = realloc(ws->rank, c * sizeof *r);
    if (r)
        ws->rank = r;
    uint32_t *w = realloc(ws->newid, c * sizeof *w);
    if (w)
        ws->newid = w;
    int32_t *p = realloc(ws->prev, c * sizeof *p);
    if (p)
        ws->prev = p;
    int32_t *x = realloc(ws->next, c * sizeof *x);
    if (x)
        ws->next = x;
    if (!s || !r || !w || !p || !x)
        return -1;
    ws->capsym = c;
    return 0;
}

/* A 4-ary min-heap of (rank << 32 | position): half the depth of a binary
 * one, and the four children share a cache line. */
static int heap_reserve(struct tok_ws *ws, size_t n)
{
    if (n <= ws->capheap)
        return 0;
    size_t c = ws->capheap ? ws->capheap * 2 : 256;
    while (c < n)
        c *= 2;
    uint64_t *h = realloc(ws->heap, c * sizeof *h);
    if (!h)
        return -1;
    ws->heap = h;
    ws->capheap = c;
    return 0;
}

static int heap_push(struct tok_ws *ws, uint64_t key)
{
    if (ws->nheap == ws->capheap && heap_reserve(ws, ws->nheap + 1))
        return -1;
    uint64_t *h = ws->heap;
    size_t i = ws->nheap++;
    while (i > 0) {
        size_t p = (i - 1) / 4;
        if (h[p] <= key)
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = key;
    return 0;
}

static void heap_sift_down(uint64_t *h, size_t n, size_t i, uint64_t key)
{
    for (;;) {
        size_t c = 4 * i + 1;
        if (c >= n)
            break;
        size_t best = c;
        size_t end = c + 4 < n ? c + 4 : n;
        for (size_t k = c + 1; k < end; k++)
            if (h[k] < h[best])
                best = k;
        if (key <= h[best])
            break;
        h[i] = h[best];
        i = best;
    }
    h[i] = key;
}

static uint64_t heap_pop(struct tok_ws *ws)
{
    uint64_t *h = ws->heap;
    uint64_t top = h[0], last = h[--ws->nheap];
    if (ws->nheap)
        heap_sift_down(h, ws->nheap, 0, last);
    return top;
}

/* Appends the byte-level rendering (GPT-2 chars) of raw bytes to buf. */
static size_t bytes_to_chars(const uint8_t *p, size_t n, uint8_t *buf)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++)
        o += tok_utf8_encode(tok_byte_to_char(p[i]), buf + o);
    return o;
}

/* Initial symbols of a piece when the fast per-byte table does not apply:
 * Hugging Face's merge_word (prefix, suffix, byte fallback, unk). */
static int initial_symbols_general(const tokenizer *tok, struct tok_ws *ws, const uint8_t *p, size_t n,
                                   size_t *nsym)
{
    size_t m = 0;
    uint32_t unk_pending = 0; /* bytes of pending unk; 0 none */
    uint8_t keybuf[512];
    for (size_t i = 0; i < n;) {
        size_t ulen = tok->byte_level ? 1 : tok_utf8_len(p[i]);
        if (i + ulen > n)
            ulen = n - i;
        bool first = i == 0, last = i + ulen == n;
        size_t klen = 0;
        uint8_t *key = keybuf;
        size_t need = ulen + tok->prefix_len + tok->suffix_len;
        if (need > sizeof keybuf)
            return TOKENIZER_ENOMEM; /* a prefix/suffix longer than 500 bytes is refused at load */
        if (!first && tok->prefix) {
            memcpy(key, tok->prefix, tok->prefix_len);
            klen = tok->prefix_len;
        }
        memcpy(key + klen, p + i, ulen);
        klen += ulen;
        if (last && tok->suffix) {
            memcpy(key + klen, tok->suffix, tok->suffix_len);
            klen += tok->suffix_len;
        }
        if (scratch_reserve(ws, m + 4 * klen + 8))
            return TOKENIZER_ENOMEM;
        uint32_t id = tok_strmap_get(&tok->vocab, key, klen);
        if (id != TOK_NONE) {
            if (unk_pending) {
                ws->sym[m++] = tok->unk_id;
                unk_pending = 0;
            }
            ws->sym[m++] = id;
            i += ulen;
            continue;
        }
        if (tok->byte_fallback) {
            /* Hugging Face falls back on the bytes of the string as the model sees it */
            uint8_t sbuf[2048];
            const uint8_t *s = key;
            size_t slen = klen;
            if (tok->byte_level) {
                slen = bytes_to_chars(key, klen, sbuf);
                s = sbuf;
            }
            size_t start = m;
            bool ok = true;
            if (scratch_reserve(ws, m + slen + 8))
                return TOKENIZER_ENOMEM;
            for (size_t k = 0; k < slen && ok; k++) {
                uint32_t fid = tok->fallback_byte[s[k]];
                if (fid == TOK_NONE)
                    ok = false;
                else
                    ws->sym[m++] = fid;
            }
            if (ok) {
                i += ulen;
                continue;
            }
            m = start;
        }
        if (tok->unk_id != TOK_NONE) {
            if (unk_pending && !tok->fuse_unk) {
                ws->sym[m++] = tok->unk_id;
            }
            unk_pending = 1;
        }
        i += ulen;
    }
    if (unk_pending)
        ws->sym[m++] = tok->unk_id;
    *nsym = m;
    return 0;
}

static inline void pair_at(const tokenizer *tok, struct tok_ws *ws, size_t i)
{
    if (!tok_pair_find(tok, ws->sym[i], ws->sym[i + 1], &ws->rank[i], &ws->newid[i]))
        ws->rank[i] = UINT32_MAX;
}

/* Lowest rank first, leftmost among equals: what Hugging Face's heap does. */
/* ranks: the pairs' ranks are already in ws->rank / ws->newid */
static size_t merge_linear(const tokenizer *tok, struct tok_ws *ws, size_t m, bool ranks)
{
    if (m < 2)
        return m;
    if (!ranks)
        for (size_t i = 0; i + 1 < m; i++)
            pair_at(tok, ws, i);
    for (;;) {
        uint32_t best = UINT32_MAX;
        size_t bi = 0;
        for (size_t i = 0; i + 1 < m; i++)
            if (ws->rank[i] < best) {
                best = ws->rank[i];
                bi = i;
            }
        if (best == UINT32_MAX)
            break;
        ws->sym[bi] = ws->newid[bi];
        size_t tail = m - bi - 2;
        memmove(ws->sym + bi + 1, ws->sym + bi + 2, tail * sizeof *ws->sym);
        memmove(ws->rank + bi + 1, ws->rank + bi + 2, tail * sizeof *ws->rank);
        memmove(ws->newid + bi + 1, ws->newid + bi + 2, tail * sizeof *ws->newid);
        m--;
        if (bi + 1 < m)
            pair_at(tok, ws, bi);
        else
            ws->rank[bi] = UINT32_MAX;
        if (bi > 0)
            pair_at(tok, ws, bi - 1);
        if (m < 2)
            break;
    }
    return m;
}

/* Long pieces (long runs of one character above all) merge by rank groups:
 * each pending rank has the list of positions where its pair was queued, and
 * a heap orders the ranks only. Popping a rank merges its positions left to
 * right, which is the (rank, position) order of Hugging Face's heap: a merge
 * never makes a pair of its own rank (the new symbol is neither half of it).
 * If a merge queues a lower rank, Hugging Face would take that one next, so
 * the rest of the group goes back into the queue. rank[i] and newid[i]
 * describe the live pair starting at symbol i (rank UINT32_MAX: none, or i
 * is merged away); a queued position whose pair changed is skipped. With
 * bytes set, sym holds the piece's bytes' ids and the first pairs come from
 * the byte grid. */
struct mgroup {
    uint32_t rank, sorted;
    int32_t head, tail;
};
struct mnode {
    uint32_t pos;
    int32_t next;
};
struct mslot {
    uint32_t rank;  /* UINT32_MAX: empty */
    int32_t group;  /* the open group of this rank, or -1 */
};

static int grow_array(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t c = *cap ? *cap : 1024;
    while (c < need)
        c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q)
        return -1;
    *p = q;
    *cap = c;
    return 0;
}

static struct mslot *gmap_slot(struct tok_ws *ws, uint32_t rank)
{
    for (size_t i = (rank * 0x9E3779B1u) & ws->gmap_mask;; i = (i + 1) & ws->gmap_mask)
        if (ws->gmap[i].rank == rank || ws->gmap[i].rank == UINT32_MAX)
            return &ws->gmap[i];
}

static int gmap_init(struct tok_ws *ws, size_t cap)
{
    struct mslot *m = malloc(cap * sizeof *m);
    if (!m)
        return -1;
    for (size_t i = 0; i < cap; i++)
        m[i] = (struct mslot){UINT32_MAX, -1};
    struct mslot *old = ws->gmap;
    size_t oldcap = old ? ws->gmap_mask + 1 : 0;
    ws->gmap = m;
    ws->gmap_mask = cap - 1;
    for (size_t i = 0; i < oldcap; i++)
        if (old[i].rank != UINT32_MAX)
            *gmap_slot(ws, old[i].rank) = old[i];
    free(old);
    return 0;
}

static int queue_pair(struct tok_ws *ws, uint32_t r, uint32_t pos)
{
    if ((ws->gmap_used + 1) * 2 > ws->gmap_mask + 1 && gmap_init(ws, (ws->gmap_mask + 1) * 2))
        return -1;
    if (grow_array((void **)&ws->grp, &ws->capgrp, ws->ngrp + 1, sizeof *ws->grp) ||
        grow_array((void **)&ws->node, &ws->capnode, ws->nnode + 1, sizeof *ws->node))
        return -1;
    struct mslot *s = gmap_slot(ws, r);
    if (s->rank == UINT32_MAX) {
        s->rank = r;
        ws->gmap_used++;
    }
    if (s->group < 0) {
        if (heap_push(ws, (uint64_t)r << 32 | ws->ngrp))
            return -1;
        s->group = (int32_t)ws->ngrp;
        ws->grp[ws->ngrp++] = (struct mgroup){r, 1, -1, -1};
    }
    struct mgroup *g = &ws->grp[s->group];
    int32_t k = (int32_t)ws->nnode++;
    ws->node[k] = (struct mnode){pos, -1};
    if (g->tail >= 0) {
        ws->node[g->tail].next = k;
        if (ws->node[g->tail].pos > pos)
            g->sorted = 0;
    } else {
        g->head = k;
    }
    g->tail = k;
    if (r < ws->lowest_queued)
        ws->lowest_queued = r;
    return 0;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static int merge_heap(const tokenizer *tok, struct tok_ws *ws, size_t *pm, const uint8_t *bytes)
{
    size_t m = *pm;
    uint32_t *id = ws->sym, *rank = ws->rank, *newid = ws->newid;
    int32_t *prev = ws->prev, *next = ws->next;
    ws->nheap = ws->ngrp = ws->nnode = ws->gmap_used = 0;
    size_t mapcap = 1024;
    while (mapcap < 2 * m && mapcap < 65536)
        mapcap *= 2;
    free(ws->gmap);
    ws->gmap = NULL;
    if (gmap_init(ws, mapcap) || grow_array((void **)&ws->gpos, &ws->capgpos, m, sizeof *ws->gpos))
        return TOKENIZER_ENOMEM;
    for (size_t i = 0; i < m; i++) {
        prev[i] = (int32_t)i - 1;
        next[i] = i + 1 < m ? (int32_t)(i + 1) : -1;
        rank[i] = UINT32_MAX;
        if (i + 1 >= m)
            break;
        if (bytes) {
            uint64_t e = tok->byte_pair[(size_t)bytes[i] << 8 | bytes[i + 1]];
            if (e != UINT64_MAX) {
                rank[i] = (uint32_t)(e >> 32);
                newid[i] = (uint32_t)e;
            }
        } else if (!tok_pair_find(tok, id[i], id[i + 1], &rank[i], &newid[i])) {
            rank[i] = UINT32_MAX;
        }
        if (rank[i] != UINT32_MAX && queue_pair(ws, rank[i], (uint32_t)i))
            return TOKENIZER_ENOMEM;
    }
    while (ws->nheap) {
        uint64_t top = heap_pop(ws);
        uint32_t r = (uint32_t)(top >> 32);
        struct mgroup g = ws->grp[(uint32_t)top];
        gmap_slot(ws, r)->group = -1; /* closed: rank r again opens a new group */
        size_t k = 0;
        for (int32_t x = g.head; x >= 0; x = ws->node[x].next)
            ws->gpos[k++] = ws->node[x].pos;
        if (!g.sorted)
            qsort(ws->gpos, k, sizeof *ws->gpos, cmp_u32);
        for (size_t j = 0; j < k; j++) {
            uint32_t pos = ws->gpos[j];
            if (rank[pos] != r)
                continue;
            ws->lowest_queued = UINT32_MAX;
            int32_t nx = next[pos];
            id[pos] = newid[pos];
            rank[nx] = UINT32_MAX; /* merged away */
            next[pos] = next[nx];
            if (next[nx] >= 0)
                prev[next[nx]] = (int32_t)pos;
            if (prev[pos] >= 0) {
                int32_t pv = prev[pos];
                if (!tok_pair_find(tok, id[pv], id[pos], &rank[pv], &newid[pv]))
                    rank[pv] = UINT32_MAX;
                else if (queue_pair(ws, rank[pv], (uint32_t)pv))
                    return TOKENIZER_ENOMEM;
            }
            if (next[pos] < 0 || !tok_pair_find(tok, id[pos], id[next[pos]], &rank[pos], &newid[pos]))
                rank[pos] = UINT32_MAX;
            else if (queue_pair(ws, rank[pos], pos))
                return TOKENIZER_ENOMEM;
            if (ws->lowest_queued < r) {
                for (size_t q = j + 1; q < k; q++)
                    if (queue_pair(ws, r, ws->gpos[q]))
                        return TOKENIZER_ENOMEM;
                break;
            }
        }
    }
    size_t o = 0;
    for (int32_t i = 0; i >= 0; i = next[i])
        id[o++] = id[i];
    *pm = o;
    return 0;
}

static void cache_clear(struct tok_ws *ws)
{
    for (size_t i = 0; i < CACHE_SLOTS; i++)
        ws->cache[i].key_len = 0xFFFF;
    ws->cache_nkeys = ws->cache_nids = ws->cache_count = 0;
}

static const cache_slot *cache_find(struct tok_ws *ws, const uint8_t *p, size_t n, uint32_t h)
{
    for (uint32_t i = h & (CACHE_SLOTS - 1);; i = (i + 1) & (CACHE_SLOTS - 1)) {
        const cache_slot *s = &ws->cache[i];
        if (s->key_len == 0xFFFF)
            return NULL;
        if (s->hash == h && s->key_len == n && tok_key_eq(ws->cache_keys + s->key_off, p, n))
            return s;
    }
}

static void cache_put(struct tok_ws *ws, const uint8_t *p, size_t n, uint32_t h, const uint32_t *ids, size_t k)
{
    if (k > 0xFFFE)
        return;
    if (ws->cache_count * 2 >= CACHE_SLOTS || ws->cache_nkeys + n > CACHE_KEY_BYTES ||
        ws->cache_nids + k > CACHE_IDS)
        cache_clear(ws);
    uint32_t i = h & (CACHE_SLOTS - 1);
    while (ws->cache[i].key_len != 0xFFFF)
        i = (i + 1) & (CACHE_SLOTS - 1);
    cache_slot *s = &ws->cache[i];
    s->hash = h;
    s->key_off = ws->cache_nkeys;
    s->key_len = (uint16_t)n;
    s->ids_off = ws->cache_nids;
    s->ids_len = (uint16_t)k;
    memcpy(ws->cache_keys + ws->cache_nkeys, p, n);
    memcpy(ws->cache_ids + ws->cache_nids, ids, k * sizeof *ids);
    ws->cache_nkeys += (uint32_t)n;
    ws->cache_nids += (uint32_t)k;
    ws->cache_count++;
}

int tok_bpe_piece(const tokenizer *tok, struct tok_ws *ws, const uint8_t *p, size_t n, tokenizer_ids *out,
                  uint64_t *count)
{
    if (n == 0)
        return 0;
    /* the cache (small, hot) first; results never depend on it. The vocab
     * is hashed the same way. */
    uint32_t h = tok_hash(p, n);
    if (n <= CACHE_MAX_KEY) {
        const cache_slot *s = cache_find(ws, p, n, h);
        if (s)
            return emit(out, count, ws->cache_ids + s->ids_off, s->ids_len);
    }
    if (tok->ignore_merges || tok->whole_ok) {
        uint32_t id = tok_strmap_get_hashed(&tok->vocab, p, n, h);
        bool whole = id != TOK_NONE && (tok->ignore_merges || (id < tok->whole_ok_bits &&
                                                               (tok->whole_ok[id >> 3] & (1u << (id & 7)))));
        if (whole) {
            if (n <= CACHE_MAX_KEY)
                cache_put(ws, p, n, h, &id, 1);
            return emit(out, count, &id, 1);
        }
    }
    size_t m;
    if (tok->simple_bytes) {
        if (scratch_reserve(ws, n + 1))
            return TOKENIZER_ENOMEM;
        for (size_t i = 0; i < n; i++)
            ws->sym[i] = tok->byte_id[p[i]];
        m = n;
        if (m <= tok->linear_max && tok->byte_pair) {
            /* first-round pairs from the dense byte grid: no hash probes */
            for (size_t i = 0; i + 1 < m; i++) {
                uint64_t e = tok->byte_pair[(size_t)p[i] << 8 | p[i + 1]];
                ws->rank[i] = e == UINT64_MAX ? UINT32_MAX : (uint32_t)(e >> 32);
                ws->newid[i] = (uint32_t)e;
            }
            m = merge_linear(tok, ws, m, true);
            if (n <= CACHE_MAX_KEY)
                cache_put(ws, p, n, h, ws->sym, m);
            return emit(out, count, ws->sym, m);
        }
    } else {
        int rc = initial_symbols_general(tok, ws, p, n, &m);
        if (rc)
            return rc;
    }
    if (m <= tok->linear_max) {
        m = merge_linear(tok, ws, m, false);
    } else {
        int rc = merge_heap(tok, ws, &m, tok->simple_bytes && m == n ? p : NULL);
        if (rc)
            return rc;
    }
    if (n <= CACHE_MAX_KEY)
        cache_put(ws, p, n, h, ws->sym, m);
    return emit(out, count, ws->sym, m);
}

/* ---------------- pre-tokenizers ---------------- */

/* Hugging Face's find_matches over one split, with Oniguruma's iteration: an
 * empty match right where the previous match ended is skipped by one char. */
static int regex_pieces(struct tok_ws *ws, const pcre2_code *re, const span *s, bool invert)
{
    ws->npieces = 0;
    if (s->len == 0)
        return pieces_push(ws, 0, 0, invert);
    if (ws->split_kind != TOK_SPLIT_REGEX) {
        /* a hand-written matcher: its matches are never empty */
        size_t prev = 0, ms, me;
        while (tok_split_next(ws->split_kind, s->p, s->len, prev, &ms, &me)) {
            if (prev != ms && pieces_push(ws, (uint32_t)prev, (uint32_t)ms, invert))
                return TOKENIZER_ENOMEM;
            if (pieces_push(ws, (uint32_t)ms, (uint32_t)me, !invert))
                return TOKENIZER_ENOMEM;
            prev = me;
        }
        if (prev != s->len && pieces_push(ws, (uint32_t)prev, s->len, invert))
            return TOKENIZER_ENOMEM;
        return 0;
    }
    size_t pos = 0, prev = 0;
    size_t last_match_end = SIZE_MAX;
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(ws->md);
    while (pos <= s->len) {
        int rc = pcre2_match(re, s->p, s->len, pos, PCRE2_NO_UTF_CHECK, ws->md, ws->mctx);
        if (rc == PCRE2_ERROR_NOMATCH)
            break;
        if (rc < 0)
            return TOKENIZER_EINTERNAL;
        size_t ms = ov[0], me = ov[1];
        if (ms == me && last_match_end == me) {
            if (pos >= s->len)
                break;
            pos += tok_utf8_len(s->p[pos]);
            continue;
        }
        pos = me;
        last_match_end = me;
        if (prev != ms && pieces_push(ws, (uint32_t)prev, (uint32_t)ms, invert))
            return TOKENIZER_ENOMEM;
        if (pieces_push(ws, (uint32_t)ms, (uint32_t)me, !invert))
            return TOKENIZER_ENOMEM;
        prev = me;
        if (ms == me && pos >= s->len)
            break;
    }
    if (prev != s->len && pieces_push(ws, (uint32_t)prev, s->len, invert))
        return TOKENIZER_ENOMEM;
    return 0;
}

static int literal_pieces(struct tok_ws *ws, const uint8_t *lit, size_t litlen, const span *s, bool invert)
{
    ws->npieces = 0;
    if (s->len == 0 || litlen == 0)
        return pieces_push(ws, 0, s->len, invert);
    size_t prev = 0, pos = 0;
    while (pos + litlen <= s->len) {
        const uint8_t *f = memmem(s->p + pos, s->len - pos, lit, litlen);
        if (!f)
            break;
        size_t ms = (size_t)(f - s->p), me = ms + litlen;
        if (prev != ms && pieces_push(ws, (uint32_t)prev, (uint32_t)ms, invert))
            return TOKENIZER_ENOMEM;
        if (pieces_push(ws, (uint32_t)ms, (uint32_t)me, !invert))
            return TOKENIZER_ENOMEM;
        prev = pos = me;
    }
    if (prev != s->len && pieces_push(ws, (uint32_t)prev, s->len, invert))
        return TOKENIZER_ENOMEM;
    return 0;
}

/* Digits: pieces of numeric / non-numeric chars, one char each when numeric. */
static int digit_pieces(struct tok_ws *ws, const span *s)
{
    ws->npieces = 0;
    size_t prev = 0;
    for (size_t i = 0; i < s->len;) {
        size_t l;
        uint32_t cp = tok_utf8_decode(s->p + i, &l);
        if (tok_is_numeric(cp)) {
            if (prev != i && pieces_push(ws, (uint32_t)prev, (uint32_t)i, false))
                return TOKENIZER_ENOMEM;
            if (pieces_push(ws, (uint32_t)i, (uint32_t)(i + l), true))
                return TOKENIZER_ENOMEM;
            prev = i + l;
        }
        i += l;
    }
    if (prev != s->len && pieces_push(ws, (uint32_t)prev, s->len, false))
        return TOKENIZER_ENOMEM;
    if (s->len == 0)
        return pieces_push(ws, 0, 0, false);
    return 0;
}

/* Applies a split behavior to ws->pieces and pushes the non-empty results. */
static int apply_behavior(struct tok_ws *ws, enum tok_behavior b, const span *s, spanvec *outv)
{
    piece *pc = ws->pieces;
    size_t n = ws->npieces, k = 0;
    /* result written in place: (start, end, remove) */
    switch (b) {
    case B_ISOLATED:
        for (size_t i = 0; i < n; i++)
            pc[i].match = false;
        k = n;
        break;
    case B_REMOVED:
        k = n;
        break;
    case B_MERGED_PREV: {
        bool prev_match = false;
        for (size_t i = 0; i < n; i++) {
            piece c = pc[i];
            if (c.match && !prev_match && k > 0)
                pc[k - 1].end = c.end;
            else if (c.match && !prev_match)
                pc[k++] = (piece){c.start, c.end, false};
            else
                pc[k++] = (piece){c.start, c.end, false};
            prev_match = c.match;
        }
        break;
    }
    case B_MERGED_NEXT: {
        /* right to left, then the result is in reverse at the end of the array */
        bool prev_match = false;
        size_t w = n;
        for (size_t i = n; i-- > 0;) {
            piece c = pc[i];
            if (c.match && !prev_match && w < n)
                pc[w].start = c.start;
            else
                pc[--w] = (piece){c.start, c.end, false};
            prev_match = c.match;
        }
        memmove(pc, pc + w, (n - w) * sizeof *pc);
        k = n - w;
        break;
    }
    case B_CONTIGUOUS: {
        bool prev_match = false;
        for (size_t i = 0; i < n; i++) {
            piece c = pc[i];
            if (c.match == prev_match && k > 0)
                pc[k - 1].end = c.end;
            else
                pc[k++] = (piece){c.start, c.end, false};
            prev_match = c.match;
        }
        break;
    }
    }
    for (size_t i = 0; i < k; i++) {
        if (pc[i].match || pc[i].start >= pc[i].end)
            continue;
        if (spanvec_push(outv, s->p + pc[i].start, pc[i].end - pc[i].start, s->at_origin && pc[i].start == 0))
            return TOKENIZER_ENOMEM;
    }
    return 0;
}

static const uint8_t SPACE_CHAR = ' ';

static int run_pretok(const tokenizer *tok, struct tok_ws *ws, const tok_pretok *pt, spanvec *in, spanvec *outv)
{
    outv->n = 0;
    for (size_t si = 0; si < in->n; si++) {
        span s = in->v[si];
        int rc = 0;
        switch (pt->kind) {
        case PT_SPLIT:
            ws->split_kind = tok->regex_only ? TOK_SPLIT_REGEX : pt->split_kind;
            rc = pt->re ? regex_pieces(ws, pt->re, &s, pt->invert)
                        : literal_pieces(ws, pt->literal, pt->literal_len, &s, pt->invert);
            if (!rc)
                rc = apply_behavior(ws, pt->behavior, &s, outv);
            break;
        case PT_BYTELEVEL:
            if (pt->add_prefix_space && (s.len == 0 || s.p[0] != SPACE_CHAR)) {
                uint8_t *q = arena_alloc(ws, s.len + 1);
                if (!q)
                    return TOKENIZER_ENOMEM;
                q[0] = ' ';
                memcpy(q + 1, s.p, s.len);
                s.p = q;
                s.len++;
            }
            if (pt->re) {
                ws->split_kind = TOK_SPLIT_REGEX;
                rc = regex_pieces(ws, pt->re, &s, false);
                if (!rc)
                    rc = apply_behavior(ws, B_ISOLATED, &s, outv);
            } else if (s.len) {
                rc = spanvec_push(outv, s.p, s.len, s.at_origin) ? TOKENIZER_ENOMEM : 0;
            }
            break;
        case PT_DIGITS:
            rc = digit_pieces(ws, &s);
            if (!rc)
                rc = apply_behavior(ws, pt->individual ? B_ISOLATED : B_CONTIGUOUS, &s, outv);
            break;
        case PT_METASPACE: {
            size_t spaces = 0;
            for (size_t i = 0; i < s.len; i++)
                spaces += s.p[i] == ' ';
            bool starts = s.len >= pt->repl_len && memcmp(s.p, pt->repl, pt->repl_len) == 0;
            /* after replacement the split starts with the replacement iff it started with ' ' or with it */
            starts = starts || (s.len && s.p[0] == ' ');
            bool prepend = !starts && (pt->prepend == PREPEND_ALWAYS || (pt->prepend == PREPEND_FIRST && s.at_origin));
            size_t nlen = s.len + spaces * (pt->repl_len - 1) + (prepend ? pt->repl_len : 0);
            uint8_t *q = arena_alloc(ws, nlen ? nlen : 1);
            if (!q)
                return TOKENIZER_ENOMEM;
            size_t o = 0;
            if (prepend) {
                memcpy(q, pt->repl, pt->repl_len);
                o = pt->repl_len;
            }
            for (size_t i = 0; i < s.len; i++) {
                if (s.p[i] == ' ') {
                    memcpy(q + o, pt->repl, pt->repl_len);
                    o += pt->repl_len;
                } else
                    q[o++] = s.p[i];
            }
            span ns = {q, (uint32_t)o, s.at_origin};
            if (pt->split) {
                rc = literal_pieces(ws, pt->repl, pt->repl_len, &ns, false);
                if (!rc)
                    rc = apply_behavior(ws, B_MERGED_NEXT, &ns, outv);
            } else if (o) {
                rc = spanvec_push(outv, q, o, s.at_origin) ? TOKENIZER_ENOMEM : 0;
            }
            break;
        }
        }
        if (rc)
            return rc;
    }
    return 0;
}

/* The Isolated pieces of direct_kinds[level] in p[0..n): matches and the
 * text between them, each cut further by the next level, then BPE. */
static int direct_pieces(const tokenizer *tok, struct tok_ws *ws, size_t level, const uint8_t *p, size_t n,
                         tokenizer_ids *out, uint64_t *count)
{
    /* ndirect <= TOK_MAX_DIRECT, but the second test is what lets GCC see
     * the bound of direct_kinds[level] in the clones it makes of this
     * recursion at -O3 (else -Warray-bounds for levels past the array) */
    if (level >= tok->ndirect || level >= TOK_MAX_DIRECT)
        return tok_bpe_piece(tok, ws, p, n, out, count);
    size_t pos = 0, ms, me;
    int rc = 0;
    while (!rc && tok_split_next(tok->direct_kinds[level], p, n, pos, &ms, &me)) {
        if (ms > pos)
            rc = direct_pieces(tok, ws, level + 1, p + pos, ms - pos, out, count);
        if (!rc)
            rc = direct_pieces(tok, ws, level + 1, p + ms, me - ms, out, count);
        pos = me;
    }
    if (!rc && pos < n)
        rc = direct_pieces(tok, ws, level + 1, p + pos, n - pos, out, count);
    return rc;
}

/* Pre-tokenizes one (normalized) segment and runs BPE on every piece. */
static int pretok_and_bpe(const tokenizer *tok, struct tok_ws *ws, const uint8_t *p, size_t n, bool at_origin,
                          tokenizer_ids *out, uint64_t *count)
{
    if (n == 0)
        return 0;
    if (n > UINT32_MAX - 8)
        return TOKENIZER_ENOMEM;
    if (tok->ndirect && !tok->regex_only)
        return direct_pieces(tok, ws, 0, p, n, out, count);
    arena_reset(ws);
    spanvec *in = &ws->a, *o = &ws->b;
    in->n = 0;
    if (spanvec_push(in, p, n, at_origin))
        return TOKENIZER_ENOMEM;
    for (size_t i = 0; i < tok->npretoks; i++) {
        int rc = run_pretok(tok, ws, &tok->pretoks[i], in, o);
        if (rc)
            return rc;
        spanvec *t = in;
        in = o;
        o = t;
    }
    for (size_t i = 0; i < in->n; i++) {
        int rc = tok_bpe_piece(tok, ws, in->v[i].p, in->v[i].len, out, count);
        if (rc)
            return rc;
    }
    return 0;
}

/* ---------------- added tokens ---------------- */

static uint32_t trie_child(const tok_trie *t, uint32_t node, uint8_t b)
{
    uint64_t key = ((uint64_t)node << 8) | b;
    for (uint64_t i = (key * 0x9E3779B97F4A7C15ull) >> 24;; i++) {
        uint64_t k = t->edge_keys[i & t->edge_mask];
        if (k == key)
            return t->edge_vals[i & t->edge_mask];
        if (k == UINT64_MAX)
            return 0;
    }
}

static int match_push(struct tok_ws *ws, size_t s, size_t e, uint32_t tokidx)
{
    if (ws->nmatch == ws->capmatch) {
        size_t c = ws->capmatch ? ws->capmatch * 2 : 64;
        uint32_t *a = realloc(ws->match_start, c * sizeof *a);
        if (a)
            ws->match_start = a;
        uint32_t *b = realloc(ws->match_end, c * sizeof *b);
        if (b)
            ws->match_end = b;
        uint32_t *d = realloc(ws->match_tok, c * sizeof *d);
        if (d)
            ws->match_tok = d;
        if (!a || !b || !d)
            return -1;
        ws->capmatch = c;
    }
    ws->match_start[ws->nmatch] = (uint32_t)s;
    ws->match_end[ws->nmatch] = (uint32_t)e;
    ws->match_tok[ws->nmatch] = tokidx;
    ws->nmatch++;
    return 0;
}

static uint32_t last_char_before(const uint8_t *p, size_t end)
{
    size_t i = end;
    while (i > 0 && (p[i - 1] & 0xC0) == 0x80)
        i--;
    if (i == 0)
        return 0;
    size_t l;
    return tok_utf8_decode(p + i - 1, &l);
}

/* Leftmost-longest non-overlapping matches, then Hugging Face's find_matches
 * filters (single_word) and extensions (lstrip, rstrip). */
static int find_added(const tok_trie *t, struct tok_ws *ws, const uint8_t *p, size_t n)
{
    ws->nmatch = 0;
    if (!t->ntokens)
        return 0;
    size_t start_offset = 0;
    for (size_t i = 0; i < n;) {
        if (!t->first[p[i]]) {
            i++;
            continue;
        }
        uint32_t node = 0;
        size_t best_len = 0;
        int32_t best = -1;
        for (size_t j = i; j < n; j++) {
            node = trie_child(t, node, p[j]);
            if (!node)
                break;
            if (t->terminal[node] >= 0) {
                best = t->terminal[node];
                best_len = j + 1 - i;
            }
        }
        if (best < 0) {
            i++;
            continue;
        }
        size_t s = i, e = i + best_len;
        i = e;
        const tok_added *a = &t->tokens[best];
        if (a->single_word) {
            bool before_word = s > 0 && tok_is_word(last_char_before(p, s));
            size_t l;
            bool after_word = e < n && tok_is_word(tok_utf8_decode(p + e, &l));
            if (before_word || after_word)
                continue;
        }
        if (a->lstrip) {
            size_t ns = s;
            while (ns > 0) {
                size_t k = ns;
                while (k > 0 && (p[k - 1] & 0xC0) == 0x80)
                    k--;
                size_t l;
                if (k == 0 || !tok_is_space(tok_utf8_decode(p + k - 1, &l)))
                    break;
                ns = k - 1;
            }
            s = ns > start_offset ? ns : start_offset;
        }
        if (a->rstrip) {
            while (e < n) {
                size_t l;
                uint32_t cp = tok_utf8_decode(p + e, &l);
                if (!tok_is_space(cp))
                    break;
                e += l;
            }
        }
        if (match_push(ws, s, e, (uint32_t)best))
            return TOKENIZER_ENOMEM;
        start_offset = e;
        if (i < e)
            i = e; /* rstrip consumed text past the automaton's position */
    }
    return 0;
}

/* ---------------- normalizer ---------------- */

static bool nfc_is_inert(const tokenizer *tok, const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        if (p[i] < 0xCC) { /* below U+0300: never changed by NFC */
            i += tok_utf8_len(p[i]);
            continue;
        }
        size_t l;
        uint32_t cp = tok_utf8_decode(p + i, &l);
        i += l;
        if (cp >= 0xAC00 && cp <= 0xD7A3) {
            /* a Hangul syllable is its own NFC unless a jamo follows that
             * could compose with it */
            size_t l2;
            if (i < n && p[i] == 0xE1 && (tok_utf8_decode(p + i, &l2) & ~0xFFu) == 0x1100)
                return false;
            continue;
        }
        if (!(tok->nfc_inert[cp >> 3] & (1u << (cp & 7))))
            return false;
    }
    return true;
}

static bool bit_at(const uint8_t *map, uint32_t cp)
{
    return map[cp >> 3] >> (cp & 7) & 1;
}

uint8_t *tok_nfc(const tokenizer *tok, const uint8_t *p, size_t n, size_t *outlen)
{
    /* utf8proc on the stretches between barriers, which are copied as they are */
    uint8_t *out = NULL;
    size_t o = 0, cap = 0;
    for (size_t i = 0; i <= n;) {
        size_t j = i, l = 0;
        while (j < n && !bit_at(tok->nfc_barrier, tok_utf8_decode(p + j, &l)))
            j += l;
        if (i == 0 && j == n) {
            utf8proc_uint8_t *dst = NULL;
            utf8proc_ssize_t r = utf8proc_map(p, (utf8proc_ssize_t)n, &dst, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
            if (r < 0)
                return NULL;
            *outlen = (size_t)r;
            return dst;
        }
        utf8proc_uint8_t *dst = NULL;
        utf8proc_ssize_t r = 0;
        if (j > i && (r = utf8proc_map(p + i, (utf8proc_ssize_t)(j - i), &dst, UTF8PROC_STABLE | UTF8PROC_COMPOSE)) < 0) {
            free(out);
            return NULL;
        }
        size_t bl = j < n ? l : 0;
        if (o + (size_t)r + bl + 1 > cap) {
            size_t c = cap ? cap : n + 16;
            while (c < o + (size_t)r + bl + 1)
                c *= 2;
            uint8_t *q = realloc(out, c);
            if (!q) {
                free(dst);
                free(out);
                return NULL;
            }
            out = q;
            cap = c;
        }
        if (r)
            memcpy(out + o, dst, (size_t)r);
        free(dst);
        o += (size_t)r;
        memcpy(out + o, p + j, bl);
        o += bl;
        if (j >= n)
            break;
        i = j + bl;
    }
    *outlen = o;
    return out;
}

/* ---------------- the pipeline ---------------- */

/* The added-token matches of ws, copied out (starts, ends, tokens: nmatch
 * each), since segmenting between them reuses ws. */
static int copy_matches(const struct tok_ws *ws, uint32_t **out)
{
    size_t nm = ws->nmatch;
    uint32_t *ms = malloc(nm * 3 * sizeof *ms);
    if (!ms)
        return TOKENIZER_ENOMEM;
    memcpy(ms, ws->match_start, nm * sizeof *ms);
    memcpy(ms + nm, ws->match_end, nm * sizeof *ms);
    memcpy(ms + 2 * nm, ws->match_tok, nm * sizeof *ms);
    *out = ms;
    return 0;
}

static int normalized_segment(const tokenizer *tok, struct tok_ws *ws, const uint8_t *p, size_t n, bool at_origin,
                              tokenizer_ids *out, uint64_t *count)
{
    uint8_t *norm = NULL;
    if (tok->nfc && !nfc_is_inert(tok, p, n)) {
        size_t nl;
        if (!(norm = tok_nfc(tok, p, n, &nl)))
            return TOKENIZER_ENOMEM;
        p = norm;
        n = nl;
    }
    int rc = 0;
    if (tok->added_norm.ntokens) {
        /* the matches live in ws and are overwritten below only after use */
        rc = find_added(&tok->added_norm, ws, p, n);
        size_t nm = ws->nmatch;
        uint32_t *ms = NULL;
        if (!rc && nm)
            rc = copy_matches(ws, &ms);
        size_t prev = 0;
        for (size_t k = 0; !rc && k < nm; k++) {
            if (ms[k] > prev)
                rc = pretok_and_bpe(tok, ws, p + prev, ms[k] - prev, at_origin && prev == 0, out, count);
            if (!rc)
                rc = emit(out, count, &tok->added_norm.tokens[ms[2 * nm + k]].id, 1);
            prev = ms[nm + k];
        }
        if (!rc && prev < n)
            rc = pretok_and_bpe(tok, ws, p + prev, n - prev, at_origin && prev == 0, out, count);
        free(ms);
    } else {
        rc = pretok_and_bpe(tok, ws, p, n, at_origin, out, count);
    }
    free(norm);
    return rc;
}

int tok_run(const tokenizer *tok, struct tok_ws *ws, const uint8_t *text, size_t len, tokenizer_ids *out,
            uint64_t *count)
{
    uint8_t *fixed = NULL;
    if (tok_utf8_valid_prefix(text, len) != len) {
        size_t fl;
        fixed = tok_utf8_lossy(text, len, &fl);
        if (!fixed)
            return TOKENIZER_ENOMEM;
        text = fixed;
        len = fl;
    }
    int rc = find_added(&tok->added_raw, ws, text, len);
    size_t nm = ws->nmatch;
    uint32_t *ms = NULL;
    if (!rc && nm)
        rc = copy_matches(ws, &ms);
    size_t prev = 0;
    for (size_t k = 0; !rc && k < nm; k++) {
        if (ms[k] > prev)
            rc = normalized_segment(tok, ws, text + prev, ms[k] - prev, prev == 0, out, count);
        if (!rc)
            rc = emit(out, count, &tok->added_raw.tokens[ms[2 * nm + k]].id, 1);
        if (ms[nm + k] > prev)
            prev = ms[nm + k];
    }
    if (!rc && prev < len)
        rc = normalized_segment(tok, ws, text + prev, len - prev, prev == 0, out, count);
    free(ms);
    free(fixed);
    return rc;
}

int tok_mark_whole_tokens(tokenizer *tok)
{
    if (tok->ignore_merges || !tok->simple_bytes)
        return 0;
    struct tok_ws *ws = ws_create();
    if (!ws)
        return -1;
    uint32_t bits = tok->vocab_size;
    uint8_t *ok = calloc(bits / 8 + 1, 1);
    if (!ok) {
        tok_ws_destroy(ws);
        return -1;
    }
    const tok_strmap *v = &tok->vocab;
    int rc = 0;
    for (size_t i = 0; i <= v->mask && !rc; i++) {
        const tok_slot *s = &v->slots[i];
        if (s->len == UINT32_MAX || s->len == 0 || s->id >= bits)
            continue;
        if (scratch_reserve(ws, s->len + 1)) {
            rc = -1;
            break;
        }
        const uint8_t *p = v->bytes + s->off;
        for (size_t k = 0; k < s->len; k++)
            ws->sym[k] = tok->byte_id[p[k]];
        size_t m = s->len;
        if (m <= tok->linear_max)
            m = merge_linear(tok, ws, m, false);
        else
            rc = merge_heap(tok, ws, &m, NULL);
        if (!rc && m == 1 && ws->sym[0] == s->id)
            ok[s->id >> 3] |= (uint8_t)(1u << (s->id & 7));
    }
    tok_ws_destroy(ws);
    if (rc) {
        free(ok);
        return -1;
    }
    tok->whole_ok = ok;
    tok->whole_ok_bits = bits;
    return 0;
}
