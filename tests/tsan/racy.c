/* The canary of `make tsan`: a deliberate data race (two threads incrementing one
 * plain long) that ThreadSanitizer must report.  If it does not, the run is not
 * checking anything (an uninstrumented build, TSan switched off, a suppression
 * too broad), and `make tsan` fails instead of passing vacuously. */
static long gp_canary_counter;

void gp_canary_bump(int times)
{
    for (int i = 0; i < times; i++)
        gp_canary_counter++;
}
