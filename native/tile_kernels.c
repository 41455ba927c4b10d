/*
 * tile_kernels: the per-pixel loops of vs_coreml_esrgan's tiling engine, in one pass each.
 *
 * Python (vs_coreml_esrgan/pixel_kernels.py) loads this with ctypes; its numpy twin there
 * computes the same values and the tests compare the two. Plain C11, no dependencies:
 *
 *   ek_region   one rectangle of an upscaled tile (float16 or float32, C channels) into
 *               the frame's planes: weighted into a float accumulator, or finished
 *               (clamped to [0, 1], scaled, rounded to nearest even, stored as uint8,
 *               uint16, float16 or float32) straight into the planes. Reports non-finite
 *               tile values.
 *   ek_convert  one frame plane (uint8, uint16, float16, float32) scaled into a float16 or
 *               float32 array (the tiles' source). Reports non-finite float samples.
 *
 * float16 <-> float32 is what numpy does slowly (scalar code); here it is F16C on x86-64
 * (chosen at run time, the CPU is asked once), the __fp16 type on arm64 (NEON fcvtl/fcvtn),
 * else portable scalar code. Rows are converted in blocks that stay in L1.
 * Built with -ffp-contract=off so sums and products round as numpy's do (no fused
 * multiply-add): the numpy twin gives bit-identical results.
 */

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define EK_X86 1
#include <immintrin.h>
#endif

enum { EK_U8 = 0, EK_U16 = 1, EK_F16 = 2, EK_F32 = 3 };
enum { EK_DIRECT = 0, EK_STORE = 1, EK_ADD = 2, EK_FINISH = 3 };

#define BLOCK 1024 /* floats per converted block: 4 KiB, in L1 */

/* ---- float16 <-> float32 ------------------------------------------------------------ */

static float half_to_float_soft(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exponent = (h >> 10) & 0x1fu;
    uint32_t mantissa = h & 0x3ffu;
    uint32_t bits;
    if (exponent == 0x1fu) {
        bits = sign | 0x7f800000u | (mantissa << 13);
    } else if (exponent != 0) {
        bits = sign | ((exponent + 112u) << 23) | (mantissa << 13);
    } else if (mantissa == 0) {
        bits = sign;
    } else { /* subnormal: exact as a float product */
        float value = (float)mantissa * (1.0f / 16777216.0f);
        memcpy(&bits, &value, sizeof bits);
        bits |= sign;
    }
    float out;
    memcpy(&out, &bits, sizeof out);
    return out;
}

static uint16_t float_to_half_soft(float value) {
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    uint16_t sign = (uint16_t)((bits >> 16) & 0x8000u);
    uint32_t magnitude = bits & 0x7fffffffu;
    if (magnitude >= 0x7f800000u) /* inf, nan (quiet) */
        return sign | 0x7c00u | (magnitude > 0x7f800000u ? 0x200u : 0u);
    if (magnitude >= 0x477ff000u) /* rounds to >= 65520: infinity */
        return sign | 0x7c00u;
    if (magnitude < 0x38800000u) { /* below the smallest normal half: subnormal or zero */
        if (magnitude < 0x33000000u)
            return sign; /* below half the smallest subnormal */
        /* value * 2^24, rounded to nearest even, is the subnormal's mantissa */
        uint32_t shift = 126u - (magnitude >> 23);
        uint32_t mantissa = (magnitude & 0x7fffffu) | 0x800000u;
        uint32_t kept = mantissa >> shift;
        uint32_t rest = mantissa & ((1u << shift) - 1u);
        uint32_t halfway = 1u << (shift - 1u);
        if (rest > halfway || (rest == halfway && (kept & 1u)))
            kept++;
        return sign | (uint16_t)kept;
    }
    uint32_t rounded = magnitude - 0x38000000u; /* rebias the exponent 127 -> 15 */
    uint32_t kept = rounded >> 13;
    uint32_t rest = rounded & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (kept & 1u)))
        kept++;
    return sign | (uint16_t)kept;
}

#ifdef EK_X86
__attribute__((target("avx,f16c"))) static void halves_to_floats_f16c(
        const uint16_t *src, float *dst, ptrdiff_t n) {
    ptrdiff_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    for (; i < n; i++)
        dst[i] = half_to_float_soft(src[i]);
}

__attribute__((target("avx,f16c"))) static void floats_to_halves_f16c(
        const float *src, uint16_t *dst, ptrdiff_t n) {
    ptrdiff_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++)
        dst[i] = float_to_half_soft(src[i]);
}

static int has_f16c(void) {
    static int known = -1; /* racing threads store the same answer */
    if (known < 0) {
        __builtin_cpu_init();
        known = __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx");
    }
    return known;
}

static int has_avx2(void) {
    static int known = -1;
    if (known < 0) {
        __builtin_cpu_init();
        known = __builtin_cpu_supports("avx2") && has_f16c();
    }
    return known;
}

/* The weight-one part of a tile, one row, in one pass of 8 values at a time: load
 * (float16 converted), note non-finite values, clamp, scale and round (integers), store.
 * The same operations, in the same order, as the portable path (bit-identical). Handles
 * n - n % 8 values; returns that count, with *bad set when one was NaN or infinite. */
__attribute__((target("avx2,f16c"))) static ptrdiff_t direct_row_avx2(
        const void *src, int src_type, ptrdiff_t n, void *dst, int dst_type, float peak,
        int *bad) {
    const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f);
    const __m256 scale = _mm256_set1_ps(peak), magic = _mm256_set1_ps(12582912.0f);
    const __m128i half_exponent = _mm_set1_epi16(0x7c00);
    const __m256i float_exponent = _mm256_set1_epi32(0x7f800000);
    __m256i found = _mm256_setzero_si256();
    ptrdiff_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v;
        if (src_type == EK_F16) {
            __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)src + i));
            __m128i e = _mm_cmpeq_epi16(_mm_and_si128(h, half_exponent), half_exponent);
            found = _mm256_or_si256(found, _mm256_cvtepi16_epi32(e));
            v = _mm256_cvtph_ps(h);
        } else {
            v = _mm256_loadu_ps((const float *)src + i);
            __m256i bits = _mm256_castps_si256(v);
            found = _mm256_or_si256(found, _mm256_cmpeq_epi32(
                _mm256_and_si256(bits, float_exponent), float_exponent));
        }
        v = _mm256_min_ps(_mm256_max_ps(v, zero), one);
        if (dst_type == EK_F32) {
            _mm256_storeu_ps((float *)dst + i, v);
        } else if (dst_type == EK_F16) {
            _mm_storeu_si128((__m128i *)((uint16_t *)dst + i),
                             _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
        } else {
            v = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(v, scale), magic), magic);
            __m256i q = _mm256_cvttps_epi32(v);
            __m128i words = _mm_packus_epi32(_mm256_castsi256_si128(q),
                                             _mm256_extracti128_si256(q, 1));
            if (dst_type == EK_U16)
                _mm_storeu_si128((__m128i *)((uint16_t *)dst + i), words);
            else
                _mm_storel_epi64((__m128i *)((uint8_t *)dst + i),
                                 _mm_packus_epi16(words, words));
        }
    }
    *bad |= !_mm256_testz_si256(found, found);
    return i;
}
#endif

static void halves_to_floats(const uint16_t *src, float *dst, ptrdiff_t n) {
#if defined(__aarch64__)
    const __fp16 *halves = (const __fp16 *)src;
    for (ptrdiff_t i = 0; i < n; i++)
        dst[i] = (float)halves[i];
#else
#ifdef EK_X86
    if (has_f16c()) {
        halves_to_floats_f16c(src, dst, n);
        return;
    }
#endif
    for (ptrdiff_t i = 0; i < n; i++)
        dst[i] = half_to_float_soft(src[i]);
#endif
}

static void floats_to_halves(const float *src, uint16_t *dst, ptrdiff_t n) {
#if defined(__aarch64__)
    __fp16 *halves = (__fp16 *)dst;
    for (ptrdiff_t i = 0; i < n; i++)
        halves[i] = (__fp16)src[i];
#else
#ifdef EK_X86
    if (has_f16c()) {
        floats_to_halves_f16c(src, dst, n);
        return;
    }
#endif
    for (ptrdiff_t i = 0; i < n; i++)
        dst[i] = float_to_half_soft(src[i]);
#endif
}

/* ---- shared row helpers ------------------------------------------------------------- */

/* Any non-finite among n float16 (is_half) or float32 values: all-ones exponent. */
static int any_non_finite(const void *src, int is_half, ptrdiff_t n) {
    unsigned found = 0;
    if (is_half) {
        const uint16_t *h = src;
        for (ptrdiff_t i = 0; i < n; i++)
            found |= (h[i] & 0x7c00u) == 0x7c00u;
    } else {
        const uint32_t *f = src;
        for (ptrdiff_t i = 0; i < n; i++)
            found |= (f[i] & 0x7f800000u) == 0x7f800000u;
    }
    return found != 0;
}

/* n floats of a row, as float32: the row itself or its conversion into scratch. */
static const float *row_floats(const void *src, int type, ptrdiff_t n, float *scratch) {
    if (type == EK_F32)
        return src;
    halves_to_floats(src, scratch, n);
    return scratch;
}

/* Clamp to [0, 1], scale by peak and round to nearest even (integers), store n values. */
static void finish_row(float *values, ptrdiff_t n, void *dst, int type, float peak) {
    /* x + 1.5 * 2^23 - 1.5 * 2^23 is x rounded to nearest even for 0 <= x < 2^22, in the
     * default rounding mode, and vectorises where rintf may not. */
    const float magic = 12582912.0f;
    for (ptrdiff_t i = 0; i < n; i++) {
        float v = values[i];
        v = v > 0.0f ? v : 0.0f;
        v = v < 1.0f ? v : 1.0f;
        values[i] = v;
    }
    switch (type) {
    case EK_U8: {
        uint8_t *out = dst;
        for (ptrdiff_t i = 0; i < n; i++) {
            float v = values[i] * peak;
            v = (v + magic) - magic;
            out[i] = (uint8_t)(int32_t)v;
        }
        break;
    }
    case EK_U16: {
        uint16_t *out = dst;
        for (ptrdiff_t i = 0; i < n; i++) {
            float v = values[i] * peak;
            v = (v + magic) - magic;
            out[i] = (uint16_t)(int32_t)v;
        }
        break;
    }
    case EK_F16:
        floats_to_halves(values, dst, n);
        break;
    default:
        memcpy(dst, values, (size_t)n * sizeof(float));
    }
}

/* ---- entry points ------------------------------------------------------------------- */

static size_t type_size(int type) {
    return type == EK_U8 ? 1u : type == EK_F32 ? 4u : 2u;
}

/*
 * One rows x cols rectangle, all channels, of an upscaled tile into the frame.
 *
 * src: the rectangle's first value in channel 0; src_type EK_F16 or EK_F32; strides in
 * elements. wy (rows) and wx (cols): the rectangle's weights, NULL where all are one; the
 * weight of a value is wy[r] * wx[c], rounded to float32 first (as numpy's outer product).
 * acc: a float32 accumulator rectangle (strides in elements), or NULL for EK_DIRECT.
 * mode: EK_DIRECT  planes = finish(src)            (wy, wx ignored)
 *       EK_STORE   acc = w * src
 *       EK_ADD     acc += w * src
 *       EK_FINISH  planes = finish(acc + w * src)
 * planes: channels pointers to the rectangle's first sample in each plane, all of type
 * dst_type with the row stride dst_stride (elements). peak: the integer formats' largest
 * code value. Returns 1 when a tile value in the rectangle is NaN or infinite (the
 * rectangle is then still written), else 0.
 */
int ek_region(const void *src, int src_type, ptrdiff_t src_channel_stride,
              ptrdiff_t src_row_stride, int channels, int rows, int cols,
              const float *wy, const float *wx, float *acc, ptrdiff_t acc_channel_stride,
              ptrdiff_t acc_row_stride, int mode, void *const *planes, int dst_type,
              ptrdiff_t dst_stride, float peak) {
    float scratch[BLOCK];
    float values[BLOCK];
    float weights[BLOCK];
    int bad = 0;
    const size_t src_size = type_size(src_type);
    const size_t dst_size = type_size(dst_type);
    for (int c = 0; c < channels; c++) {
        for (int r = 0; r < rows; r++) {
            const char *src_row = (const char *)src
                + (size_t)(c * src_channel_stride + r * src_row_stride) * src_size;
            float *acc_row = acc ? acc + c * acc_channel_stride + r * acc_row_stride : NULL;
            char *dst_row = (char *)planes[c] + (size_t)(r * dst_stride) * dst_size;
            const float row_weight = wy ? wy[r] : 1.0f;
            int x_start = 0;
#ifdef EK_X86
            if (mode == EK_DIRECT && has_avx2())
                x_start = (int)direct_row_avx2(src_row, src_type, cols, dst_row, dst_type,
                                               peak, &bad);
#endif
            for (int x0 = x_start; x0 < cols; x0 += BLOCK) {
                const ptrdiff_t n = cols - x0 < BLOCK ? cols - x0 : BLOCK;
                const void *block = src_row + (size_t)x0 * src_size;
                bad |= any_non_finite(block, src_type == EK_F16, n);
                const float *v = row_floats(block, src_type, n, scratch);
                if (mode == EK_DIRECT) {
                    memcpy(values, v, (size_t)n * sizeof(float));
                    finish_row(values, n, dst_row + (size_t)x0 * dst_size, dst_type, peak);
                    continue;
                }
                for (ptrdiff_t i = 0; i < n; i++)
                    weights[i] = wx ? row_weight * wx[x0 + i] : row_weight;
                float *a = acc_row + x0;
                if (mode == EK_STORE) {
                    for (ptrdiff_t i = 0; i < n; i++)
                        a[i] = weights[i] * v[i];
                } else if (mode == EK_ADD) {
                    for (ptrdiff_t i = 0; i < n; i++)
                        a[i] += weights[i] * v[i];
                } else {
                    for (ptrdiff_t i = 0; i < n; i++)
                        values[i] = a[i] + weights[i] * v[i];
                    finish_row(values, n, dst_row + (size_t)x0 * dst_size, dst_type, peak);
                }
            }
        }
    }
    return bad;
}

/*
 * One rows x cols plane into a float16 or float32 array: dst = src * scale (scale 1 for
 * float sources: a copy or a float16 <-> float32 conversion). Strides in elements.
 * Returns 1 when a float16 / float32 source sample is NaN or infinite, else 0.
 */
int ek_convert(const void *src, int src_type, ptrdiff_t src_stride, int rows, int cols,
               void *dst, int dst_type, ptrdiff_t dst_stride, float scale) {
    float values[BLOCK];
    int bad = 0;
    const size_t src_size = type_size(src_type);
    const size_t dst_size = type_size(dst_type);
    for (int r = 0; r < rows; r++) {
        const char *src_row = (const char *)src + (size_t)(r * src_stride) * src_size;
        char *dst_row = (char *)dst + (size_t)(r * dst_stride) * dst_size;
        for (int x0 = 0; x0 < cols; x0 += BLOCK) {
            const ptrdiff_t n = cols - x0 < BLOCK ? cols - x0 : BLOCK;
            const void *block = src_row + (size_t)x0 * src_size;
            void *out = dst_row + (size_t)x0 * dst_size;
            if (src_type == dst_type && (src_type == EK_F16 || src_type == EK_F32)) {
                bad |= any_non_finite(block, src_type == EK_F16, n);
                memcpy(out, block, (size_t)n * src_size);
                continue;
            }
            if (src_type == EK_U8) {
                const uint8_t *s = block;
                for (ptrdiff_t i = 0; i < n; i++)
                    values[i] = (float)s[i] * scale;
            } else if (src_type == EK_U16) {
                const uint16_t *s = block;
                for (ptrdiff_t i = 0; i < n; i++)
                    values[i] = (float)s[i] * scale;
            } else {
                bad |= any_non_finite(block, src_type == EK_F16, n);
                const float *v = row_floats(block, src_type, n, values);
                if (v != values)
                    memcpy(values, v, (size_t)n * sizeof(float));
            }
            if (dst_type == EK_F16)
                floats_to_halves(values, out, n);
            else
                memcpy(out, values, (size_t)n * sizeof(float));
        }
    }
    return bad;
}

/* The float16 conversion this build uses, for reports: "f16c", "neon" or "scalar". */
const char *ek_half_conversion(void) {
#if defined(__aarch64__)
    return "neon";
#elif defined(EK_X86)
    return has_f16c() ? "f16c" : "scalar";
#else
    return "scalar";
#endif
}
