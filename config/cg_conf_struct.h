/* Placeholder until the settings table lands (the config work replaces it). */
#ifndef CG_CONF_STRUCT_H
#define CG_CONF_STRUCT_H
struct cg_conf;
#endif
