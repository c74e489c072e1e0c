/* mep.c - the head of the one translation unit bcc compiles: both entries, sharing every map.
 *
 * bcc loads only the functions, and rewrites only the map method calls
 * (map.lookup()), found in its main text, not in included files. So
 * mep/dataplane/xdp.py (program_text()) expands the local #include "..."
 * lines in place and appends mep_xdp.c and mep_tc.c: the headers stay
 * separate files for reading, bcc sees one text.
 * Feature and size flags arrive as -D (xdp.py cflags()); nothing here is
 * edited per deployment (STYLE.md section 1).
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/in6.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/pkt_cls.h>

#include "consts.h"
#include "reasons.h"
#include "abi.h"
#include "maps.h"
#include "counters.h"
#include "parse.h"
#include "csum.h"
#include "classify.h"
#include "actions.h"
#include "flow.h"
#include "dns.h"
#include "scratch.h"
#include "fib.h"
