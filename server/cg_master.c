/* The master process. Placeholder until the master lands: it reports that
 * serving is not built yet instead of pretending to serve. */
#include "cg_log.h"
#include "cg_master.h"

int cg_master_run(struct cg_conf *conf, struct cg_err *err)
{
    (void)conf;
    cg_err_set(err, "serving is not implemented yet in this build (the master and HTTP "
                    "workers are being built); use --print-config or --check-config");
    return 1;
}
