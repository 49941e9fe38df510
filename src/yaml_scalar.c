/*
 * YAML 1.2 core-schema scalar resolution for runbook._yaml (yamlconv.h): a
 * plain scalar's text to null, boolean, integer, float or string, the way
 * YAML 1.2 says (not YAML 1.1's yes/no/on/off), so configuration reads the
 * same in runbook as in kubectl; and, for yaml.dump, which strings need
 * quotes so that no reader (1.1's yes/no/on/off included) takes them for
 * something else.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto.h"
#include "yamlconv.h"

static int eq(const char *s, size_t len, const char *word) {
  return strlen(word) == len && memcmp(s, word, len) == 0;
}

static int any(const char *s, size_t len, const char *const *words) {
  for (; *words; words++)
    if (eq(s, len, *words))
      return 1;
  return 0;
}

static int digit(char c) { return c >= '0' && c <= '9'; }

int rb_yaml_null(const char *s, size_t len) {
  static const char *const words[] = {"~", "null", "Null", "NULL", NULL};
  return len == 0 || any(s, len, words);
}

int rb_yaml_bool(const char *s, size_t len, int *b) {
  static const char *const yes[] = {"true", "True", "TRUE", NULL};
  static const char *const no[] = {"false", "False", "FALSE", NULL};
  if (any(s, len, yes))
    *b = 1;
  else if (any(s, len, no))
    *b = 0;
  else
    return 0;
  return 1;
}

/* Integers are accumulated as unsigned magnitudes so the overflow check is
 * exact, including -9223372036854775808. */
enum rb_ytype rb_yaml_int(const char *s, size_t len, long long *out) {
  unsigned long long mag = 0, limit = (unsigned long long)9223372036854775807LL;
  int neg = 0, base = 10, range = 0;
  size_t i = 0;
  if (len > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'o')) {
    base = s[1] == 'x' ? 16 : 8;
    i = 2;
  } else if (len > 0 && (s[0] == '-' || s[0] == '+')) {
    neg = s[0] == '-';
    i = 1;
  }
  if (i == len)
    return RB_Y_STR;
  if (neg)
    limit++;
  for (; i < len; i++) {
    int d = base == 16 ? rb_hexval((unsigned char)s[i]) : (digit(s[i]) ? s[i] - '0' : -1);
    if (d < 0 || d >= base)
      return RB_Y_STR;
    if (!range && mag > (limit - (unsigned)d) / (unsigned)base)
      range = 1;
    if (!range)
      mag = mag * (unsigned)base + (unsigned)d;
  }
  if (range)
    return RB_Y_RANGE;
  *out = neg ? (long long)(0 - mag) : (long long)mag;
  return RB_Y_INT;
}

/* [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?, plus .inf and .nan */
int rb_yaml_float(const char *s, size_t len, double *d) {
  static const char *const inf[] = {".inf", ".Inf", ".INF", NULL};
  static const char *const nan[] = {".nan", ".NaN", ".NAN", NULL};
  size_t i = 0, lead = 0, frac = 0;
  if (any(s, len, nan)) {
    *d = NAN;
    return 1;
  }
  if (len > 0 && (s[0] == '-' || s[0] == '+'))
    i = 1;
  if (any(s + i, len - i, inf)) {
    *d = s[0] == '-' ? -INFINITY : INFINITY;
    return 1;
  }
  while (i < len && digit(s[i]))
    i++, lead++;
  if (i < len && s[i] == '.') {
    i++;
    while (i < len && digit(s[i]))
      i++, frac++;
    if (lead == 0 && frac == 0)
      return 0;
  } else if (lead == 0) {
    return 0;
  }
  if (i < len && (s[i] == 'e' || s[i] == 'E')) {
    size_t exp = 0;
    i++;
    if (i < len && (s[i] == '-' || s[i] == '+'))
      i++;
    while (i < len && digit(s[i]))
      i++, exp++;
    if (exp == 0)
      return 0;
  }
  if (i != len)
    return 0;
  char small[64], *buf = len < sizeof small ? small : malloc(len + 1);
  if (!buf)
    return 0;
  memcpy(buf, s, len);
  buf[len] = '\0';
  *d = strtod(buf, NULL); /* overflow gives +-HUGE_VAL: the nearest float */
  if (buf != small)
    free(buf);
  return 1;
}

enum rb_ytype rb_yaml_resolve(const char *s, size_t len, struct rb_yvalue *v) {
  enum rb_ytype t;
  if (rb_yaml_null(s, len))
    return RB_Y_NULL;
  if (rb_yaml_bool(s, len, &v->b))
    return RB_Y_BOOL;
  if ((t = rb_yaml_int(s, len, &v->i)) != RB_Y_STR)
    return t;
  if (rb_yaml_float(s, len, &v->d))
    return RB_Y_FLOAT;
  return RB_Y_STR;
}

int rb_yaml_needs_quotes(const char *s, size_t len) {
  static const char *const yaml11[] = {"y",  "Y",  "yes", "Yes", "YES", "n",   "N",   "no",  "No",
                                       "NO", "on", "On",  "ON",  "off", "Off", "OFF", "<<",  "=",
                                       NULL};
  struct rb_yvalue v;
  if (rb_yaml_resolve(s, len, &v) != RB_Y_STR || any(s, len, yaml11))
    return 1;
  /* anything number-like (1_000, 0b101, 12:30, 2026-11-22) may be a
   * number or a timestamp to some reader; quoting it costs nothing */
  if (digit(s[0]))
    return 1;
  return len > 1 && (s[0] == '-' || s[0] == '+' || s[0] == '.') && (digit(s[1]) || s[1] == '.');
}

void rb_yaml_format_float(double d, char *buf, size_t size) {
  if (isnan(d)) {
    snprintf(buf, size, ".nan");
    return;
  }
  if (isinf(d)) {
    snprintf(buf, size, d > 0 ? ".inf" : "-.inf");
    return;
  }
  for (int prec = 15; prec <= 17; prec++) {
    snprintf(buf, size, "%.*g", prec, d);
    if (strtod(buf, NULL) == d)
      break;
  }
  /* keep it a float for every reader: 1 -> 1.0, 1e+300 -> 1.0e+300 */
  if (!strchr(buf, '.')) {
    char *e = strchr(buf, 'e');
    size_t n = strlen(buf);
    if (n + 3 > size)
      return;
    if (e) {
      memmove(e + 2, e, strlen(e) + 1);
      e[0] = '.';
      e[1] = '0';
    } else {
      memcpy(buf + n, ".0", 3);
    }
  }
}

int rb_yaml_utf8(const char *str, size_t len) {
  const unsigned char *s = (const unsigned char *)str;
  size_t i = 0;
  while (i < len) {
    unsigned c = s[i];
    size_t n;
    unsigned cp, min;
    if (c < 0x80) {
      i++;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      n = 1, cp = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2, cp = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3, cp = c & 0x07, min = 0x10000;
    } else {
      return 0;
    }
    if (i + n >= len) /* truncated sequence */
      return 0;
    for (size_t k = 1; k <= n; k++) {
      if ((s[i + k] & 0xC0) != 0x80)
        return 0;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      return 0;
    i += n + 1;
  }
  return 1;
}
