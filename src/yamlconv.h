/*
 * What the YAML loader (lua_yaml.c) and dumper (yaml_dump.c) share: the
 * YAML 1.2 core schema's resolution of plain scalars, number parsing and
 * the text written for numbers (yaml_scalar.c, no Lua), so what dump writes
 * is exactly what load reads back.
 */
#ifndef RUNBOOK_YAMLCONV_H
#define RUNBOOK_YAMLCONV_H

#include <stddef.h>

#include <lua.h>

#include "jsonconv.h"

/* nested collections, loading and dumping: JSON's limit, so a document that
 * loads converts to JSON and back */
#define RB_YAML_MAX_DEPTH RB_JSON_MAX_DEPTH
#define RB_YAML_TAG_PREFIX "tag:yaml.org,2002:"

/* runbook._yaml.dump(value [, {indent=, secrets=}]) -> text; raises
 * "yaml.dump: ..." on a value YAML cannot hold. */
int rb_yaml_dump(lua_State *L);

enum rb_ytype {
  RB_Y_STR,   /* anything the core schema does not claim */
  RB_Y_NULL,  /* null Null NULL ~ and the empty scalar */
  RB_Y_BOOL,  /* true True TRUE false False FALSE */
  RB_Y_INT,   /* [-+]?[0-9]+, 0o[0-7]+, 0x[0-9a-fA-F]+ within 64 bits */
  RB_Y_FLOAT, /* decimals with a dot or an exponent, [-+]?.inf, .nan */
  RB_Y_RANGE, /* integer syntax, but outside the 64-bit range */
};

struct rb_yvalue {
  int b;
  long long i;
  double d;
};

/* Resolves the text of a plain (unquoted, untagged) scalar. */
enum rb_ytype rb_yaml_resolve(const char *s, size_t len, struct rb_yvalue *v);

/* The single-type parsers behind rb_yaml_resolve, for explicit tags.
 * rb_yaml_int returns RB_Y_INT, RB_Y_RANGE or RB_Y_STR (not an integer). */
int rb_yaml_null(const char *s, size_t len);
int rb_yaml_bool(const char *s, size_t len, int *b);
enum rb_ytype rb_yaml_int(const char *s, size_t len, long long *i);
int rb_yaml_float(const char *s, size_t len, double *d);

/* 1 when a string with this text must be quoted to load back as a string:
 * the core schema would resolve it to something else, YAML 1.1 readers
 * would (yes/no/on/off, 0777, 1_000, 12:30), or it is the merge key "<<". */
int rb_yaml_needs_quotes(const char *s, size_t len);

/* Writes the shortest text that reads back as exactly d, always marked as
 * a float (1.0, 1.0e+300, -0.0, .inf, -.inf, .nan). buf holds >= 32 bytes. */
void rb_yaml_format_float(double d, char *buf, size_t size);

/* 1 when s is valid UTF-8 (no overlongs, no surrogates). */
int rb_yaml_utf8(const char *s, size_t len);

#endif
